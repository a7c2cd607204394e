"""CarDD SOD data: DUTS-style dataset (dataset.py) and COCO -> SOD conversion (coco.py)."""
from .dataset import (  # noqa: F401
    IMAGE_EXTS, PREPROCESS_PRESETS, SPLITS, CarDDSODDataset, PreprocessSpec, SODSample, get_preprocess,
    load_image, load_mask, mask_to_edge, read_sod_split, sod_collate, split_dirs,
)
from .coco import (  # noqa: F401
    cardd_coco_sources, category_slug, coco_root_to_sod, coco_to_sod, coco_to_sod_classwise, instance_union_mask,
)
