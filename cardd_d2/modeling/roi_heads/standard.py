"""StandardROIHeads whose box predictor is ``FocalFastRCNNOutputLayers``."""
from __future__ import annotations

from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads

from .focal_fast_rcnn import FocalFastRCNNOutputLayers

__all__ = ["CarDDStandardROIHeads"]


@ROI_HEADS_REGISTRY.register()
class CarDDStandardROIHeads(StandardROIHeads):
    """detectron2's StandardROIHeads with the box classifier loss chosen by MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE
    ("ce": identical to StandardROIHeads; "focal": FOCAL_VARIANT / FOCAL_ALPHA / FOCAL_GAMMA). DCN+ is this head
    with CLS_LOSS_TYPE "focal" (configs/CarDD/dcn_plus_R_*_FPN.yaml)."""

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = FocalFastRCNNOutputLayers(cfg, ret["box_head"].output_shape)
        return ret
