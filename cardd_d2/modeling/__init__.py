"""Models: deformable ResNet, focal-loss ROI heads, mmdet-style cascade, GCNet, HTC. Registered on import."""
from . import losses  # noqa: F401,E402
from . import roi_heads  # noqa: F401,E402  (CarDDStandardROIHeads, MMDetCascadeROIHeads, HTCROIHeads)
from . import proposal_generator  # noqa: F401,E402  (CarDDRPN)
from . import meta_arch  # noqa: F401,E402  (HTCRCNN)
from . import layers  # noqa: F401,E402  (deformable conv, context block)
from . import backbone  # noqa: F401,E402  (registers build_cardd_resnet_backbone / build_cardd_resnet_fpn_backbone)
