"""cardd_sod: salient object detection (CSNet, PoolNet, U2-Net, SGL-KRN) on CarDD damage maps.

Does not import detectron2."""
from .models import build_sod_model, list_sod_models
from .losses import build_sod_loss
