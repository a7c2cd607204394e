"""Tiny stand-in SOD models ("tiny*"), registered through the public registries, for fast trainer / tool tests."""
import torch.nn as nn
import torch.nn.functional as F

from cardd_sod.data import PreprocessSpec
from cardd_sod.losses import SODLoss, register_sod_loss
from cardd_sod.models import SODModelSpec, get_sod_spec, register_sod_model


class TinySODNet(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x):
        return self.conv2(F.relu(self.bn(self.conv1(x))))

    @staticmethod
    def saliency(outputs):
        return outputs.sigmoid()


class TinyLoss(SODLoss):
    name = "tiny"

    def compute(self, outputs, target, edge, **kwargs):
        bce = F.binary_cross_entropy_with_logits(outputs, target)
        return bce, {"bce": bce}


TINY_SPEC = SODModelSpec(preprocess=get_sod_spec("csnet").preprocess, loss="tiny", output_kind="logits",
                         output_names=("logits",))
register_sod_model("tiny", TinySODNet, TINY_SPEC)
register_sod_loss("tiny", TinyLoss)
# sorted data order, 3-image accumulation, no input randomness (tests/sod/test_schedules.py)
register_sod_model("tiny_sorted", TinySODNet, SODModelSpec(
    preprocess=PreprocessSpec(size=(32, 32), label_resize="nearest", save_rule="skimage_floor"), loss="tiny",
    output_kind="logits", output_names=("logits",), iter_size=3, shuffle=False))
