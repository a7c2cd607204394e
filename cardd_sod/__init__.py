"""cardd_sod: salient object detection (CSNet, PoolNet, U2-Net, SGL-KRN) on CarDD damage maps.

Does not import detectron2."""
from .models import build_sod_model, list_sod_models
from .losses import build_sod_loss
# SOD pipeline (data, metrics, training, class-wise experiments, instance-vs-SOD comparison)
from .config import get_sod_cfg, setup_sod_cfg  # noqa: E402,F401
from .data import CarDDSODDataset, coco_root_to_sod, coco_to_sod, coco_to_sod_classwise, read_sod_split  # noqa: E402,F401
from .metrics import evaluate_saliency, format_markdown_table  # noqa: E402,F401
from .engine import SODTrainer, predict_saliency_maps  # noqa: E402,F401
from .classwise import run_classwise  # noqa: E402,F401
from .compare import compare_methods, instances_to_saliency  # noqa: E402,F401
