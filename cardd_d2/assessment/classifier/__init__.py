"""Binary damaged / undamaged image classifier (CarDD paper, Section IV), torchvision only.

Paper setting: VGG16 pretrained on ImageNet with a 2-way head, all layers fine-tuned with cross-entropy, lr 0.001,
batch 16, 10 epochs (500 + 500 training images, 500 + 500 test images). The optimiser is not named in the paper; we use
SGD with momentum 0.9 and no weight decay by default.

- ``model``: the network (:func:`build_classifier`), its checkpoints (:func:`save_checkpoint`,
  :func:`load_classifier_checkpoint`), read with ``torch.load(weights_only=True)``;
- ``data``: image lists from folders or COCO jsons, the dataset and its transform;
- ``metrics``: accuracy / precision / recall / FP and FN shares, beside the paper's;
- ``train``: fine-tuning with resume, prediction and evaluation.
"""
from .data import BinaryDamageDataset, build_transform, coco_items, folder_items  # noqa: F401
from .metrics import PAPER_CLASSIFIER_METRICS, binary_metrics, format_metrics, save_confusion_png  # noqa: F401
from .model import (  # noqa: F401
    ARCHS,
    CLASS_NAMES,
    DAMAGED,
    IMAGENET_MEAN,
    IMAGENET_STD,
    UNDAMAGED,
    build_classifier,
    imagenet_cache_path,
    load_classifier_checkpoint,
    save_checkpoint,
)
from .train import evaluate_classifier, predict_proba, train_classifier  # noqa: F401
