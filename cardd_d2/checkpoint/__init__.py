"""Checkpoint conversion mmdetection 2.x -> detectron2 (mmdet_convert) and the ``mmdet://`` starting checkpoints
(model_zoo; importing this package registers its path handler)."""
from .mmdet_convert import (  # noqa: F401
    HEAD_RULE_SETS,
    ConversionResult,
    HeadRules,
    MmdetConversionError,
    Rule,
    analyze_mmdet_state_dict,
    config_overrides,
    mmdet_style_overrides,
    convert_mmdet_checkpoint,
    convert_mmdet_state_dict,
    load_mmdet_state_dict,
    register_head_rules,
)
from .model_zoo import (  # noqa: F401
    MmdetZooError,
    mmdet_cache_dir,
    mmdet_checkpoint_url,
    resolve_mmdet_checkpoint,
)
