"""SOD training engine (epoch-based trainer with exact resume)."""
from .trainer import (  # noqa: F401
    EpochShuffleSampler, SODTrainer, build_preprocess, model_kwargs, predict_saliency_maps, resolve_device,
)
