"""Config -> predictor / metadata / visualisation helpers shared by the demo, the CLI, the service and benchmarks."""
from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

import numpy as np

from cardd_d2.data.categories import CARDD_CATEGORIES, CARDD_CLASS_NAMES

logger = logging.getLogger(__name__)

__all__ = ["MissingWeightsError", "setup_cfg", "setup_export_cfg", "build_predictor", "get_metadata",
           "make_metadata", "draw_instances", "empty_instances"]


class MissingWeightsError(ValueError):
    """Inference asked for without detector weights (a randomly initialised model would label noise)."""


def setup_cfg(config_file: str, weights: Optional[str] = None, opts: Sequence[str] = (), device: Optional[str] = None,
              confidence_threshold: Optional[float] = None, classifier_weights: Optional[str] = None,
              discard_threshold: Optional[float] = None, class_names: Optional[Sequence[str]] = None):
    """:func:`cardd_d2.engine.setup_cfg` with the inference tools' flags applied after ``opts`` (frozen).

    ``confidence_threshold`` sets the test score thresholds of ROI heads, RetinaNet and panoptic FPN. The weights are
    required (:class:`MissingWeightsError` otherwise) and read once for their class names: ``MODEL.CLASS_NAMES`` of
    the result holds the names predictions are labelled with (see
    :func:`cardd_d2.checkpoint.class_names.resolve_class_names`; a missing or unreadable file raises
    ``CheckpointError``, names that disagree with ``NUM_CLASSES`` raise ``ClassNamesError``).
    """
    from cardd_d2.checkpoint.class_names import resolve_class_names
    from cardd_d2.engine.setup import setup_cfg as setup_engine_cfg

    settings = _inference_settings(weights, device, confidence_threshold, classifier_weights, discard_threshold,
                                   class_names)
    cfg = setup_engine_cfg(config_file, opts, freeze=False, settings=settings)
    if not cfg.MODEL.WEIGHTS:
        raise MissingWeightsError("no detector weights: give --weights FILE (or set MODEL.WEIGHTS), e.g. the "
                                  "model_final.pth that tools/train_net.py wrote")
    if "://" in cfg.MODEL.WEIGHTS:
        raise MissingWeightsError(f"MODEL.WEIGHTS is {cfg.MODEL.WEIGHTS!r}, a download (the config's starting point "
                                  "for training, not a trained detector): give --weights FILE, e.g. the "
                                  "model_final.pth that tools/train_net.py wrote")
    names, source = resolve_class_names(cfg)
    logger.info("class names from %s: %s", source, ", ".join(names))
    cfg.MODEL.CLASS_NAMES = names
    cfg.freeze()
    return cfg


def _inference_settings(weights, device, confidence_threshold, classifier_weights, discard_threshold, class_names):
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
    if class_names:
        settings["MODEL.CLASS_NAMES"] = [str(n) for n in class_names]
    return settings


def setup_export_cfg(export_dir: str, opts: Sequence[str] = (), confidence_threshold: Optional[float] = None,
                     classifier_weights: Optional[str] = None, discard_threshold: Optional[float] = None,
                     class_names: Optional[Sequence[str]] = None):
    """The config of a ``cardd export`` directory (its ``config.yaml``) with the inference tools' flags, for
    :func:`build_predictor` with ``export_dir``: class names from the export unless given, ``MODEL.WEIGHTS`` the
    export directory (the weights are in the exported model), CPU (frozen)."""
    from cardd_d2.engine.setup import setup_cfg as setup_engine_cfg
    from cardd_d2.export.runtime import load_export_info

    info = load_export_info(export_dir)
    settings = _inference_settings(export_dir, "cpu", confidence_threshold, classifier_weights, discard_threshold,
                                   class_names or info["class_names"])
    cfg = setup_engine_cfg(os.path.join(export_dir, info["config"]), opts, freeze=False, settings=settings)
    cfg.freeze()
    return cfg


def build_predictor(cfg, export_dir: Optional[str] = None, runtime: Optional[str] = None):
    """detectron2's ``DefaultPredictor`` (model built once, weights from ``cfg.MODEL.WEIGHTS``, BGR input) whose
    ``metadata`` carries the class names of ``cfg.MODEL.CLASS_NAMES`` (set by :func:`setup_cfg`); with
    ``export_dir``, the exported model there (:class:`cardd_d2.export.ExportedPredictor`, ``cfg`` from
    :func:`setup_export_cfg`) on ``runtime`` with ``cfg``'s score threshold."""
    if export_dir is not None:
        from cardd_d2.export.runtime import ExportedPredictor

        predictor = ExportedPredictor(export_dir, score_threshold=cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
                                      runtime=runtime)
        predictor.metadata = get_metadata(cfg)
        return predictor
    import cardd_d2  # noqa: F401  (registers cardd's models)
    from detectron2.engine import DefaultPredictor

    from cardd_d2.data.transforms import build_cardd_test_augmentation

    predictor = DefaultPredictor(cfg)
    # The config's test resize (INPUT.RESIZE_BACKEND: cv2 in the paper configs), as in evaluation; DefaultPredictor's
    # own is detectron2's PIL resize.
    augs = build_cardd_test_augmentation(cfg)
    if augs:
        (predictor.aug,) = augs
    predictor.metadata = get_metadata(cfg)
    return predictor


def make_metadata(class_names: Sequence[str]):
    """Visualizer metadata for ``class_names`` (CarDD's colours when they are CarDD's classes)."""
    from detectron2.data.catalog import Metadata

    names = [str(n) for n in class_names]
    meta = Metadata(name="cardd_inference", thing_classes=names)
    if names == list(CARDD_CLASS_NAMES):
        meta.thing_colors = [c["color"] for c in CARDD_CATEGORIES]
    return meta


def get_metadata(cfg):
    """Metadata with the model's class names, ``cfg.MODEL.CLASS_NAMES`` as :func:`setup_cfg` resolved them."""
    if not len(cfg.MODEL.CLASS_NAMES):
        raise ValueError("MODEL.CLASS_NAMES is empty: build the config with cardd_d2.assessment.predictor.setup_cfg")
    return make_metadata(cfg.MODEL.CLASS_NAMES)


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
