"""cardd_d2: a Detectron2 plugin for the CarDD car-damage dataset.

Importing the package registers cardd's datasets builders, backbones, ROI heads and meta-architectures
with detectron2's registries.
"""
from .config import add_cardd_config, get_cardd_cfg  # noqa: F401
from . import data  # noqa: F401  (registers dataset helpers)
from . import modeling  # noqa: F401  (registers models)

__version__ = "0.1.0"
