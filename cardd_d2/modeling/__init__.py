"""Models: deformable ResNet, focal-loss ROI heads, mmdet-style cascade, GCNet, HTC. Registered on import."""
from . import losses  # noqa: F401,E402
from . import roi_heads  # noqa: F401,E402  (CarDDStandardROIHeads, DCNPlusROIHeads)
from . import dcn_plus  # noqa: F401,E402  (apply_dcn_plus_preset)
