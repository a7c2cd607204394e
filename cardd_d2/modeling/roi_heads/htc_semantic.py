"""HTC's optional semantic branch: mmdet 2.x ``FusedSemanticHead`` and its fusion into the ROI features (the
meta-architecture that hands the ground-truth stuff maps to the ROI heads is ``cardd_d2.modeling.meta_arch.HTCRCNN``).

Facts taken from mmdet 2.25 (``mask_heads/fused_semantic_head.py``, ``roi_heads/htc_roi_head.py`` and
``configs/htc/htc_r50_fpn_1x_coco.py``):

* Input: the five FPN levels (P2-P6). Every level goes through a 1x1 lateral conv (+ReLU); levels other than the
  fusion level (P3, stride 8) are first resized to the fusion level's size (bilinear, ``align_corners=True``); the
  results are summed. Then 4 3x3 convs (256, ReLU). From their output, ``conv_logits`` (1x1, no activation,
  ``SEMANTIC_NUM_CLASSES`` = 183 COCO-stuff classes) gives the segmentation logits and ``conv_embedding`` (1x1,
  ReLU) the semantic feature. No normalisation layers; Kaiming (fan-out) initialisation.
* Loss (``loss_semantic_seg``): cross-entropy with ``ignore_index`` 255 and weight 0.2 against the stuff map that the
  data pipeline padded (with 255, to the padded image size) and rescaled by 1/8 with nearest-neighbour sampling.
  mmdet's ``CrossEntropyLoss`` (``avg_non_ignore=False``) divides the summed per-pixel losses by ALL pixels,
  ignored ones included; so does :meth:`FusedSemanticHead.losses`.
* Fusion (``semantic_fusion=('bbox', 'mask')``): one RoIAlign (14x14, sampling ratio 0, aligned) on the semantic
  feature at the fusion level's stride; for the box branch the 14x14 result is adaptive-average-pooled to the box
  pooler's 7x7. The pooled semantic feature is added to the pooled FPN ROI features of every stage, before the box
  head and before the mask head (and its information flow), in training and at test time. No gradient is stopped.

detectron2 differences: the semantic feature has the channels of the ROI features (256 with FPN, as in mmdet);
the stuff maps come from detectron2's standard ``dataset_dict["sem_seg"]`` (``DatasetMapper`` reads
``sem_seg_file_name``) and are padded like the images (``HTCRCNN``).
"""
from __future__ import annotations

import contextlib
from typing import Dict, List, Optional, Sequence, Tuple

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling.poolers import ROIPooler

__all__ = ["FusedSemanticHead", "SemanticFusionPooler", "NO_STUFF_MAPS_HINT"]

NO_STUFF_MAPS_HINT = (
    "Set MODEL.HTC.WITH_SEMANTIC False to train HTC without its semantic branch (configs/CarDD/htc_R_*_FPN.yaml), "
    "or train on a dataset whose dicts have 'sem_seg_file_name' stuff maps (e.g. COCO-stuff, 183 classes)."
)


class FusedSemanticHead(nn.Module):
    """Multi-level fused semantic segmentation head (mmdet ``FusedSemanticHead``).

    Parameters: ``lateral_convs.{i}`` (one per input level, in ``in_features`` order), ``convs.{i}``,
    ``conv_embedding`` and ``conv_logits`` - mmdet's names without ConvModule's ``.conv``.
    """

    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        in_features: Sequence[str],
        fusion_level: str,
        num_classes: int,
        num_convs: int = 4,
        conv_dim: int = 256,
        ignore_value: int = 255,
        loss_weight: float = 0.2,
    ):
        super().__init__()
        in_features = list(in_features)
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.HTC.SEMANTIC_IN_FEATURES {in_features}: {missing} not among the backbone outputs "
                f"{sorted(input_shape)}"
            )
        if fusion_level not in in_features:
            raise ValueError(
                f"MODEL.HTC.SEMANTIC_FUSION_LEVEL {fusion_level!r} must be one of MODEL.HTC.SEMANTIC_IN_FEATURES "
                f"{in_features}"
            )
        if num_classes < 1 or num_convs < 1:
            raise ValueError(f"FusedSemanticHead: need num_classes >= 1 and num_convs >= 1, got {num_classes}, "
                             f"{num_convs}")
        if 0 <= ignore_value < num_classes:
            raise ValueError(
                f"MODEL.HTC.SEMANTIC_IGNORE_VALUE {ignore_value} is a valid class of the {num_classes} semantic "
                "classes (MODEL.HTC.SEMANTIC_NUM_CLASSES); use a value outside [0, num_classes)"
            )
        self.in_features = in_features
        self.fusion_level = fusion_level
        self.fusion_index = in_features.index(fusion_level)
        self.fusion_stride = input_shape[fusion_level].stride
        self.num_classes = int(num_classes)
        self.ignore_value = int(ignore_value)
        self.loss_weight = float(loss_weight)
        channels = input_shape[fusion_level].channels
        self.out_channels = channels  # the semantic feature is added to FPN ROI features of this width

        self.lateral_convs = nn.ModuleList(
            Conv2d(input_shape[f].channels, channels, kernel_size=1, activation=nn.ReLU()) for f in in_features
        )
        self.convs = nn.ModuleList(
            Conv2d(channels if i == 0 else conv_dim, conv_dim, kernel_size=3, padding=1, activation=nn.ReLU())
            for i in range(num_convs)
        )
        self.conv_embedding = Conv2d(conv_dim, channels, kernel_size=1, activation=nn.ReLU())
        self.conv_logits = Conv2d(conv_dim, self.num_classes, kernel_size=1)
        for m in [*self.lateral_convs, *self.convs, self.conv_embedding, self.conv_logits]:
            weight_init.c2_msra_fill(m)  # Kaiming normal, fan-out, zero bias (mmcv's ConvModule / Kaiming init)

    def fused_features(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Output of the 3x3 convs (shared by logits and embedding)."""
        x = self.lateral_convs[self.fusion_index](features[self.fusion_level])
        size = x.shape[-2:]
        for i, name in enumerate(self.in_features):
            if i == self.fusion_index:
                continue
            feat = features[name]
            if feat.shape[-2:] != size:
                feat = F.interpolate(feat, size=size, mode="bilinear", align_corners=True)
            x = x + self.lateral_convs[i](feat)
        for conv in self.convs:
            x = conv(x)
        return x

    def forward(self, features: Dict[str, torch.Tensor], with_logits: bool = True
                ) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """Returns ``(logits [N, num_classes, h, w] or None, semantic feature [N, C, h, w])`` at the fusion level."""
        x = self.fused_features(features)
        logits = self.conv_logits(x) if with_logits else None
        return logits, self.conv_embedding(x)

    def targets_at(self, sem_seg: torch.Tensor, size) -> torch.Tensor:
        """Padded image-size stuff maps ``[N, H, W]`` -> labels at ``size`` (nearest, mmdet's 1/8 SegRescale)."""
        if sem_seg.dim() != 3:
            raise ValueError(f"FusedSemanticHead: stuff maps must be [N, H, W], got shape {tuple(sem_seg.shape)}")
        if tuple(sem_seg.shape[-2:]) == tuple(size):
            return sem_seg.long()
        return F.interpolate(sem_seg[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()

    def losses(self, logits: torch.Tensor, sem_seg: torch.Tensor) -> torch.Tensor:
        """Weighted cross-entropy; ``sem_seg`` is ``[N, H, W]`` at the padded image size (padding = ignore)."""
        sem_seg = sem_seg.to(logits.device)
        bad = (sem_seg != self.ignore_value) & ((sem_seg < 0) | (sem_seg >= self.num_classes))
        if bad.any():
            values = sorted(set(sem_seg[bad].unique().tolist()))[:10]
            raise ValueError(
                f"stuff map labels {values} are outside [0, {self.num_classes - 1}] "
                f"(MODEL.HTC.SEMANTIC_NUM_CLASSES={self.num_classes}) and are not the ignore value "
                f"{self.ignore_value} (MODEL.HTC.SEMANTIC_IGNORE_VALUE)"
            )
        target = self.targets_at(sem_seg, logits.shape[-2:])
        per_pixel = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_value, reduction="sum")
        # mmdet's CrossEntropyLoss (avg_non_ignore=False): mean over all pixels, the ignored ones counting as 0
        return per_pixel / max(target.numel(), 1) * self.loss_weight


class SemanticFusionPooler(nn.Module):
    """Wraps an ROI pooler: pooled FPN features + RoIAlign of the current semantic feature (resized to match).

    The semantic feature is set for the duration of one forward by :class:`HTCROIHeads` (``semantic_feat``);
    calling the pooler without one is an error.
    """

    def __init__(self, pooler: ROIPooler, semantic_pooler: ROIPooler):
        super().__init__()
        self.pooler = pooler
        self.semantic_pooler = semantic_pooler
        self.semantic_feat: Optional[torch.Tensor] = None

    @property
    def output_size(self):
        return self.pooler.output_size

    def forward(self, x: List[torch.Tensor], box_lists) -> torch.Tensor:
        pooled = self.pooler(x, box_lists)
        if self.semantic_feat is None:
            raise RuntimeError("SemanticFusionPooler called without a semantic feature (HTCROIHeads sets it)")
        semantic = self.semantic_pooler([self.semantic_feat], box_lists)
        # The poolers' configured sizes, not the tensors' shapes: constants, so the model exports to ONNX.
        if tuple(self.semantic_pooler.output_size) != tuple(self.pooler.output_size):
            semantic = F.adaptive_avg_pool2d(semantic, tuple(self.pooler.output_size))
        return pooled + semantic


def semantic_pooler_from_config(cfg, stride: int) -> ROIPooler:
    """mmdet's ``semantic_roi_extractor``: RoIAlign on the single semantic feature map."""
    return ROIPooler(
        output_size=cfg.MODEL.HTC.SEMANTIC_POOLER_RESOLUTION,
        scales=(1.0 / stride,),
        sampling_ratio=cfg.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO,
        pooler_type=cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE,
    )


@contextlib.contextmanager
def semantic_fusion(poolers: Sequence[SemanticFusionPooler], feature: torch.Tensor):
    """Sets ``feature`` on the fusion poolers for the duration of the block."""
    for p in poolers:
        p.semantic_feat = feature
    try:
        yield
    finally:
        for p in poolers:
            p.semantic_feat = None
