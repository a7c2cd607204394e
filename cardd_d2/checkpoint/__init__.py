"""Checkpoint conversion mmdetection 2.x -> detectron2 (see mmdet_convert for how the modules divide the work) and
the ``mmdet://`` starting checkpoints (model_zoo; importing this package registers its path handler)."""
from .mmdet_analysis import analyze_mmdet_state_dict  # noqa: F401
from .mmdet_convert import ConversionResult, convert_mmdet_checkpoint, convert_mmdet_state_dict  # noqa: F401
from .mmdet_heads import HEAD_FAMILIES, HeadFamily, detect_heads  # noqa: F401
from .mmdet_overrides import MMDET_PIXEL_MEAN, MMDET_PIXEL_STD, config_overrides, mmdet_style_overrides  # noqa: F401
from .mmdet_rules import Rule  # noqa: F401
from .mmdet_state_dict import MmdetConversionError, load_mmdet_state_dict  # noqa: F401
from .model_zoo import (  # noqa: F401
    MmdetZooError,
    mmdet_cache_dir,
    mmdet_checkpoint_url,
    resolve_mmdet_checkpoint,
)
