"""SOD training engine (epoch-based trainer with exact resume)."""
from .trainer import (  # noqa: F401
    EpochShuffleSampler, SODTrainer, build_loss_for, build_preprocess, predict_saliency_maps, resolve_device,
)
