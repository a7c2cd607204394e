"""StandardROIHeads variants whose box predictor is ``FocalFastRCNNOutputLayers``."""
from __future__ import annotations

from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads

from .focal_fast_rcnn import FocalFastRCNNOutputLayers

__all__ = ["CarDDStandardROIHeads", "DCNPlusROIHeads"]


@ROI_HEADS_REGISTRY.register()
class CarDDStandardROIHeads(StandardROIHeads):
    """detectron2's StandardROIHeads with the box classifier loss chosen by MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE
    ("ce": identical to StandardROIHeads; "focal": FOCAL_VARIANT / FOCAL_ALPHA / FOCAL_GAMMA)."""

    # Keyword arguments forced on the box predictor, over the config (subclasses set this).
    box_predictor_overrides: dict = {}

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = FocalFastRCNNOutputLayers(
            cfg, ret["box_head"].output_shape, **cls.box_predictor_overrides
        )
        return ret


@ROI_HEADS_REGISTRY.register()
class DCNPlusROIHeads(CarDDStandardROIHeads):
    """The released DCN+ ROI head: the box classifier is always trained with the focal loss, whatever
    MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE says; FOCAL_VARIANT (default "mmdet_sigmoid", the released one),
    FOCAL_ALPHA (0.5) and FOCAL_GAMMA (2.0) still come from the config so the Table III grid can vary them.
    Everything else (box head, mask head, inference with softmax scores) is StandardROIHeads'.
    """

    box_predictor_overrides = {"cls_loss_type": "focal"}
