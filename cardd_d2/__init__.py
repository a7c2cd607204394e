"""cardd_d2: a Detectron2 plugin for the CarDD car-damage dataset.

Importing the package registers cardd's datasets builders, backbones, ROI heads and meta-architectures
with detectron2's registries.
"""
import warnings

# detectron2 scripts a few helpers with torch.jit.script at import, which torch >= 2.10 reports as deprecated on
# every run; the message is about detectron2's code, not the user's.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

from .config import add_cardd_config, get_cardd_cfg  # noqa: F401,E402
from . import checkpoint  # noqa: F401,E402  (registers the mmdet:// path handler)
from . import data  # noqa: F401,E402  (registers dataset helpers)
from . import modeling  # noqa: F401,E402  (registers models)

__version__ = "0.1.0"
