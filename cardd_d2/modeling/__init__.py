"""Models: deformable ResNet, focal-loss ROI heads, mmdet-style cascade, GCNet, HTC. Registered on import."""
