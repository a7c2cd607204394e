"""CarDD datasets, validation, synthetic data and transforms."""
from .categories import CARDD_CATEGORIES, CARDD_CLASS_NAMES, size_bucket  # noqa: F401
from .synthetic import make_synthetic_cardd  # noqa: F401
from .validation import CarDDDataError, ValidationReport, validate_coco_json  # noqa: F401
from .datasets import (  # noqa: F401
    cardd_root,
    load_coco_damage_json,
    register_cardd,
    register_coco_damage,
)
from .datasets_from_cfg import config_keys_given, register_datasets_for_cfg  # noqa: F401
from .stats import dataset_stats, write_dataset_stats  # noqa: F401

# detectron2 style: the CarDD splits are registered on import, from $CARDD_DATASETS (else ./datasets); nothing is read
# until one is loaded, and DATASETS.ROOT / --cardd-root / register_cardd(root) point them elsewhere.
register_cardd()
