"""CarDD SOD data: on-disk layouts (layout.py), reading (dataset.py), per-model preprocessing (preprocess.py),
edge maps (edges.py), COCO -> SOD conversion (coco.py)."""
from . import layout  # noqa: F401
from .layout import sod_split_dirs  # noqa: F401
from .edges import mask_to_edge  # noqa: F401
from .preprocess import PreprocessSpec  # noqa: F401
from .dataset import (  # noqa: F401
    CarDDSODDataset, SODSample, load_image, load_mask, read_sod_split, sod_collate,
)
from .coco import (  # noqa: F401
    cardd_coco_sources, category_slug, coco_root_to_sod, coco_to_sod, coco_to_sod_classwise, instance_union_mask,
)
