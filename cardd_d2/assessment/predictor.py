"""Config -> predictor / metadata / visualisation helpers shared by the demo, the CLI, the service and benchmarks."""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from cardd_d2.data.categories import CARDD_CATEGORIES, CARDD_CLASS_NAMES

logger = logging.getLogger(__name__)

__all__ = ["setup_cfg", "build_predictor", "get_metadata", "draw_instances", "empty_instances"]


def setup_cfg(config_file: str, weights: Optional[str] = None, opts: Sequence[str] = (), device: Optional[str] = None,
              confidence_threshold: Optional[float] = None, classifier_weights: Optional[str] = None,
              discard_threshold: Optional[float] = None):
    """:func:`cardd_d2.engine.setup_cfg` with the inference tools' flags applied after ``opts`` (frozen).

    ``confidence_threshold`` sets the test score thresholds of ROI heads, RetinaNet and panoptic FPN.
    """
    from cardd_d2.engine.setup import setup_cfg as setup_engine_cfg

    settings = {}
    if weights is not None:
        settings["MODEL.WEIGHTS"] = weights
    if device is not None:
        settings["MODEL.DEVICE"] = device
    if confidence_threshold is not None:
        for key in ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "MODEL.RETINANET.SCORE_THRESH_TEST",
                    "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH"):
            settings[key] = float(confidence_threshold)
    if classifier_weights is not None:
        settings["MODEL.DAMAGE_GATE.WEIGHTS"] = classifier_weights
    if discard_threshold is not None:
        settings["MODEL.DAMAGE_GATE.DISCARD_THRESHOLD"] = float(discard_threshold)
    return setup_engine_cfg(config_file, opts, settings=settings)


def build_predictor(cfg):
    """detectron2's ``DefaultPredictor`` (model built once, weights from ``cfg.MODEL.WEIGHTS``, BGR input)."""
    import cardd_d2  # noqa: F401  (registers cardd's models)
    from detectron2.engine import DefaultPredictor

    return DefaultPredictor(cfg)


def get_metadata(cfg=None):
    """Metadata of ``cfg.DATASETS.TEST[0]`` when registered with ``thing_classes`` (and as many classes as the model
    predicts), else CarDD's names and colours."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    num_classes = None
    if cfg is not None:
        arch = str(cfg.MODEL.META_ARCHITECTURE)
        num_classes = cfg.MODEL.RETINANET.NUM_CLASSES if "RetinaNet" in arch else cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if cfg is not None and len(cfg.DATASETS.TEST):
        name = cfg.DATASETS.TEST[0]
        if name in DatasetCatalog.list() or name in MetadataCatalog.list():
            meta = MetadataCatalog.get(name)
            classes = meta.get("thing_classes")
            if classes and num_classes is not None and len(classes) != num_classes:
                logger.warning("dataset %s has %d classes but the model predicts %d: using CarDD's names",
                               name, len(classes), num_classes)
            elif classes:
                if not meta.get("thing_colors") and len(meta.thing_classes) == len(CARDD_CLASS_NAMES):
                    meta.thing_colors = [c["color"] for c in CARDD_CATEGORIES]
                return meta
    meta = MetadataCatalog.get("cardd_default_visualisation")
    if not meta.get("thing_classes"):
        meta.thing_classes = list(CARDD_CLASS_NAMES)
        meta.thing_colors = [c["color"] for c in CARDD_CATEGORIES]
    return meta


def draw_instances(image_bgr: np.ndarray, instances, metadata, score_threshold: float = 0.0) -> np.ndarray:
    """detectron2 Visualizer overlay (class names, scores, masks); returns an RGB uint8 array."""
    from detectron2.utils.visualizer import ColorMode, Visualizer

    inst = instances.to("cpu")
    if score_threshold > 0 and inst.has("scores"):
        inst = inst[inst.scores >= score_threshold]
    mode = ColorMode.SEGMENTATION if metadata.get("thing_colors") else ColorMode.IMAGE
    vis = Visualizer(image_bgr[:, :, ::-1], metadata=metadata, instance_mode=mode)
    return vis.draw_instance_predictions(inst).get_image()


def empty_instances(height: int, width: int, with_masks: bool = True):
    """An ``Instances`` with zero detections (and every prediction field), for discarded images."""
    import torch
    from detectron2.structures import Boxes, Instances

    inst = Instances((int(height), int(width)))
    inst.pred_boxes = Boxes(torch.zeros((0, 4)))
    inst.scores = torch.zeros((0,))
    inst.pred_classes = torch.zeros((0,), dtype=torch.int64)
    if with_masks:
        inst.pred_masks = torch.zeros((0, int(height), int(width)), dtype=torch.bool)
    return inst
