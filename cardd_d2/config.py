"""Every config key cardd adds to detectron2's defaults, with its default value.

Call ``add_cardd_config(cfg)`` on a fresh ``get_cfg()`` before merging a cardd YAML file (a second call is a no-op);
``cardd_d2.engine.setup_cfg`` does both and merges a YAML file and overrides. Each section names the module that
reads it.

Naming: a new key sits in the detectron2 node it configures (DATASETS, INPUT, MODEL.<component>, TEST) and is named
for what it does, never after the project; a new component gets its own node under MODEL (MODEL.HTC,
MODEL.DAMAGE_GATE).
"""
from detectron2.config import CfgNode as CN


def add_cardd_config(cfg):
    _C = cfg
    # The keys themselves say whether they were added; a flag stored in the CfgNode would appear in every dumped
    # config.yaml.
    if "DAMAGE_GATE" in _C.MODEL:
        return cfg

    # ---------------------------------------------------------------- data (cardd_d2.data)
    # Folder that contains CarDD_COCO/ for cardd_train/val/test; "" means $CARDD_DATASETS, else ./datasets
    # (cardd_d2.data.register_datasets_for_cfg).
    _C.DATASETS.ROOT = ""
    # Drop invalid annotations (with a warning and a count) instead of raising before training; this and
    # CHECK_IMAGES apply to every dataset of DATASETS.TRAIN / TEST registered by cardd_d2.data.
    _C.DATASETS.SKIP_INVALID = False
    # Open every image once when a dataset is first loaded, so unreadable files fail before training.
    _C.DATASETS.CHECK_IMAGES = True
    # Your own COCO instance datasets, registered at start: [name, json file, image folder] triples (paths relative
    # to the working directory); name them in DATASETS.TRAIN / DATASETS.TEST (cardd_d2.data.datasets_from_cfg).
    _C.DATASETS.REGISTER_COCO = []

    # ---------------------------------------------------------------- input (cardd_d2.data.transforms)
    # Pixel resampling of the single-scale train and test resize: "pil" (detectron2's; antialiases when shrinking) or
    # "cv2" (cv2.resize bilinear / nearest for masks, mmdetection's default, used by the paper configs).
    _C.INPUT.RESIZE_BACKEND = "pil"
    # Rasterise polygons to full-image bitmaps at the original size before the augmentations (mmdetection's
    # poly2mask); needs MASK_FORMAT "bitmask" (cardd_d2.data.mapper).
    _C.INPUT.RASTERIZE_BEFORE_RESIZE = False
    # mmdet's Resize(img_scale=[(W, H_min), (W, H_max)], multiscale_mode='range'): the DCN+ training resize.
    _C.INPUT.RANGE_RESIZE = CN()
    _C.INPUT.RANGE_RESIZE.ENABLED = False
    _C.INPUT.RANGE_RESIZE.WIDTH = 1333
    _C.INPUT.RANGE_RESIZE.HEIGHT_RANGE = (640, 1200)
    # False: width exactly WIDTH, height uniform in HEIGHT_RANGE (released DCN+). True: ResizeShortestEdge range mode.
    _C.INPUT.RANGE_RESIZE.KEEP_RATIO = False

    # ---------------------------------------------------------------- backbone (cardd_d2.modeling.backbone)
    # Which deformable-conv kernel the deformable ResNet uses (cardd_d2.modeling.layers.deform_conv):
    #  "auto": chosen at every forward by the input's device: on CUDA detectron2's compiled kernel when _C is
    #          importable, else torchvision; elsewhere "sampling" (its CPU backward is several times faster);
    #  "torchvision": torchvision.ops.deform_conv2d;
    #  "sampling": bilinear grid_sample at the offset positions + matmul, backward by autograd (same results);
    #  "detectron2": detectron2's compiled kernel (needs _C).
    # All values build modules with the same parameter names, so checkpoints load with any of them.
    _C.MODEL.RESNETS.DEFORM_BACKEND = "auto"
    # GCNet context blocks (mmcv ContextBlock) after conv3 of every bottleneck in the chosen stages (res2..res5).
    _C.MODEL.RESNETS.GC_ON_PER_STAGE = [False, False, False, False]
    _C.MODEL.RESNETS.GC_RATIO = 1.0 / 4

    # ---------------------------------------------------------------- RPN anchor assignment (cardd_d2.modeling.proposal_generator)
    # Read by PROPOSAL_GENERATOR.NAME "CarDDRPN". Low-quality matches: "detectron2" (an anchor that is a ground
    # truth's best keeps its own best ground truth; no minimum IoU) or "mmdet" (it is reassigned to that ground truth
    # if the IoU is >= LOW_QUALITY_MIN_IOU; mmdet MaxIoUAssigner min_pos_iou, 0.3 for the released RPNs).
    # CarDDRPN also leaves anchors outside BOUNDARY_THRESH out of the assignment, as mmdet's allowed_border.
    _C.MODEL.RPN.LOW_QUALITY_MATCHES = "detectron2"
    _C.MODEL.RPN.LOW_QUALITY_MIN_IOU = 0.3

    # ---------------------------------------------------------------- ROI box classifier loss (cardd_d2.modeling.roi_heads)
    # "ce" (detectron2's softmax cross-entropy) or "focal".
    _C.MODEL.ROI_BOX_HEAD.CLS_LOSS_TYPE = "ce"
    # "mmdet_sigmoid": per-logit sigmoid focal over all K+1 logits (what the released DCN+ trained);
    # "softmax": the paper's Eq. (1), softmax focal on the ground-truth class.
    _C.MODEL.ROI_BOX_HEAD.FOCAL_VARIANT = "mmdet_sigmoid"
    _C.MODEL.ROI_BOX_HEAD.FOCAL_ALPHA = 0.5
    _C.MODEL.ROI_BOX_HEAD.FOCAL_GAMMA = 2.0

    # ---------------------------------------------------------------- mmdet-style cascade and HTC (cardd_d2.modeling.roi_heads)
    # mmdet's per-stage weights of the cascade's box (and mask) losses; one per entry of ROI_BOX_CASCADE_HEAD.IOUS.
    _C.MODEL.ROI_BOX_CASCADE_HEAD.STAGE_LOSS_WEIGHTS = (1.0, 0.5, 0.25)
    _C.MODEL.HTC = CN()
    _C.MODEL.HTC.INTERLEAVED = True
    _C.MODEL.HTC.MASK_INFO_FLOW = True
    _C.MODEL.HTC.WITH_SEMANTIC = False
    _C.MODEL.HTC.SEMANTIC_LOSS_WEIGHT = 0.2
    _C.MODEL.HTC.SEMANTIC_NUM_CLASSES = 183
    # Semantic branch (mmdet FusedSemanticHead; needs META_ARCHITECTURE "HTCRCNN" and "sem_seg" stuff maps):
    # input levels, the level everything is resized to (stride 8 in mmdet), 3x3 convs and their width, the label
    # that is ignored (also the padding value), ROI branches that add the pooled semantic feature, and the RoIAlign
    # size on the semantic feature (14 in mmdet; average-pooled down to the box pooler's 7).
    _C.MODEL.HTC.SEMANTIC_IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    _C.MODEL.HTC.SEMANTIC_FUSION_LEVEL = "p3"
    _C.MODEL.HTC.SEMANTIC_NUM_CONVS = 4
    _C.MODEL.HTC.SEMANTIC_CONV_DIM = 256
    _C.MODEL.HTC.SEMANTIC_IGNORE_VALUE = 255
    _C.MODEL.HTC.SEMANTIC_FUSION = ("bbox", "mask")
    _C.MODEL.HTC.SEMANTIC_POOLER_RESOLUTION = 14

    # ---------------------------------------------------------------- evaluation (cardd_d2.evaluation)
    _C.TEST.EVALUATOR = CN()
    # Also report COCO's 32^2/96^2 size APs (under the "coco_" prefix) next to CarDD's 128^2/256^2 ones.
    _C.TEST.EVALUATOR.REPORT_COCO_SIZES = True
    # Size buckets of APs/APm/APl: "cardd" (128^2 / 256^2, paper Sec. III-C) or "coco" (32^2 / 96^2).
    _C.TEST.EVALUATOR.AREA_RANGES = "cardd"
    # detectron2's compiled COCOeval_opt when importable; the default (False) is pycocotools' COCOeval.
    _C.TEST.EVALUATOR.USE_FAST_IMPL = False
    # Row label of this run in results.md ("" -> "ours").
    _C.TEST.EVALUATOR.METHOD_NAME = ""
    # COCOeval's detections per image for AP (COCO and mmdet: 100), independent of TEST.DETECTIONS_PER_IMAGE.
    _C.TEST.EVALUATOR.MAX_DETS_PER_IMAGE = 100

    # ---------------------------------------------------------------- class names (cardd_d2.checkpoint.class_names)
    # Names of the model's classes in contiguous id order; [] = the names stored in the checkpoint (key
    # "thing_classes"), else those of the config's dataset (with a warning). Inference labels predictions with them.
    _C.MODEL.CLASS_NAMES = []

    # ---------------------------------------------------------------- damaged/undamaged gate (cardd_d2.assessment)
    _C.MODEL.DAMAGE_GATE = CN()
    # Checkpoint written by tools/train_classifier.py (VGG16, 2-way head); "" = no gate.
    _C.MODEL.DAMAGE_GATE.WEIGHTS = ""
    # Paper Section V-G: an image is discarded (not sent to the detector) when P(undamaged) > this.
    _C.MODEL.DAMAGE_GATE.DISCARD_THRESHOLD = 0.9
    # Square classifier input side, used only for checkpoints that do not record the size they were trained at.
    _C.MODEL.DAMAGE_GATE.INPUT_SIZE = 224
    return cfg


def get_cardd_cfg():
    """A detectron2 config with cardd's keys added."""
    from detectron2.config import get_cfg

    return add_cardd_config(get_cfg())
