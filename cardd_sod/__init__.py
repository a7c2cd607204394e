"""cardd_sod: salient object detection (CSNet, PoolNet, U2-Net, SGL-KRN) on CarDD damage maps.

Does not import detectron2."""
