"""cardd ROI heads, registered in detectron2's ROI_HEADS_REGISTRY on import.

- ``CarDDStandardROIHeads``: StandardROIHeads whose box classifier loss follows MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE.
- ``MMDetCascadeROIHeads``: Cascade Mask R-CNN as mmdetection 2.x builds it.
- ``HTCROIHeads``: Hybrid Task Cascade (optional semantic branch).
"""
from .focal_fast_rcnn import FocalFastRCNNOutputLayers, roi_cls_loss_kwargs_from_cfg  # noqa: F401
from .standard import CarDDStandardROIHeads  # noqa: F401
from .cascade_mmdet import MMDetCascadeROIHeads  # noqa: F401,E402  (mmdet-style Cascade Mask R-CNN)
from .htc import HTCROIHeads  # noqa: F401,E402  (Hybrid Task Cascade without semantic branch)
