"""Trace a detector and write an export directory.

What is traced is the model from the resized CHW image (the model's ``INPUT.FORMAT``, float pixels) to its detections
before post-processing: boxes in the resized image, scores, classes and the per-box 28x28 mask probabilities
(``model.inference(..., do_postprocess=False)``). Normalisation, padding, backbone (deformable convs through the
"sampling" kernel: ``grid_sample`` + matmul, which ONNX has from opset 16), RPN, ROI heads and NMS are in the graph.
Resizing, the score threshold, box rescaling and mask pasting stay outside, in :mod:`cardd_d2.export.runtime`, done
by detectron2's own code, so post-processing is identical to detectron2's.

The graph is traced with a score threshold of 0: a trace follows the branches its sample input takes, and a sample
without detections could record the empty-result paths. Thresholding afterwards keeps exactly the detections the
thresholded model returns (NMS is per class and score-ordered, so boxes under the threshold never suppress one
above it; the per-image top-k then keeps the same boxes).

Export directory: the model file (``model.ts`` or ``model.onnx``), ``export.json`` (format, file, class names,
input format, pixel mean/std, score threshold, outputs, the config it came from) and ``config.yaml`` (the full
config, which the runtime reads for the test resize).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Optional

logger = logging.getLogger(__name__)

__all__ = ["EXPORT_FORMATS", "MIN_ONNX_OPSET", "DEFAULT_ONNX_OPSET", "ExportError", "export_model", "EXPORT_JSON"]

EXPORT_FORMATS = ("onnx", "torchscript")
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.ts"}
EXPORT_JSON = "export.json"
CONFIG_YAML = "config.yaml"
# GridSample (the deformable convs) and RoiAlign with half-pixel coordinates (ROIAlignV2) are ONNX opset 16.
MIN_ONNX_OPSET = 16
DEFAULT_ONNX_OPSET = 17
# (META_ARCHITECTURE, ROI_HEADS.NAME) pairs that trace and match eager (tests/export): the paper's families.
SUPPORTED_MODELS = {("GeneralizedRCNN", "StandardROIHeads"), ("GeneralizedRCNN", "CarDDStandardROIHeads"),
                    ("GeneralizedRCNN", "MMDetCascadeROIHeads"),
                    ("GeneralizedRCNN", "HTCROIHeads"), ("HTCRCNN", "HTCROIHeads")}
OUTPUT_NAMES = ("boxes", "scores", "classes", "mask_probs")


class ExportError(ValueError):
    """The model cannot be exported as asked (unsupported architecture, weights, format or opset)."""


def check_exportable(cfg, fmt: str, opset: Optional[int]):
    """A clear :class:`ExportError` for what cannot be exported, before anything is built."""
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"--format must be one of {EXPORT_FORMATS}, got {fmt!r}")
    arch = (cfg.MODEL.META_ARCHITECTURE, cfg.MODEL.ROI_HEADS.NAME)
    if arch not in SUPPORTED_MODELS:
        raise ExportError(f"cannot export MODEL.META_ARCHITECTURE={arch[0]!r} with MODEL.ROI_HEADS.NAME={arch[1]!r}: "
                          f"export supports {sorted(SUPPORTED_MODELS)} (Mask R-CNN, Cascade, HTC, GCNet, "
                          "DCN, DCN+)")
    if cfg.MODEL.KEYPOINT_ON:
        raise ExportError("cannot export a keypoint head (MODEL.KEYPOINT_ON)")
    if fmt == "onnx" and opset is not None and int(opset) < MIN_ONNX_OPSET:
        raise ExportError(f"ONNX opset {opset} is too old: the export needs opset >= {MIN_ONNX_OPSET} (GridSample for "
                          "the deformable convolutions, RoiAlign with half-pixel coordinates)")
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        raise ExportError("no weights: give --weights FILE (a checkpoint tools/train_net.py wrote)")
    if "://" not in weights and not os.path.isfile(weights):
        raise ExportError(f"weights file not found: {weights}")


def _sample_image(cfg):
    """A CHW float image at the test size (the trace's sample; any size runs afterwards)."""
    import torch

    h = int(cfg.INPUT.MIN_SIZE_TEST) or 320
    w = int(round(h * 4 / 3))
    if cfg.INPUT.MAX_SIZE_TEST:
        w = min(w, int(cfg.INPUT.MAX_SIZE_TEST))
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, h, w, generator=g) * 255


def _inference(model, inputs):
    inst = model.inference(inputs, do_postprocess=False)[0]
    out = (inst.pred_boxes.tensor, inst.scores, inst.pred_classes)
    return out + ((inst.pred_masks,) if inst.has("pred_masks") else ())


def export_model(cfg, output_dir: str, fmt: str, opset: Optional[int] = None,
                 source_config_file: Optional[str] = None) -> dict:
    """Export the model of ``cfg`` (weights from ``cfg.MODEL.WEIGHTS``; class names from ``cfg.MODEL.CLASS_NAMES``
    as :func:`cardd_d2.assessment.predictor.setup_cfg` resolves them) to ``output_dir``; returns export.json's
    content. Raises :class:`ExportError` for what cannot be exported."""
    check_exportable(cfg, fmt, opset)
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.export import TracingAdapter
    from detectron2.modeling import build_model

    import cardd_d2  # noqa: F401  (registers cardd's models)

    opset = int(opset or DEFAULT_ONNX_OPSET) if fmt == "onnx" else None
    score_threshold = float(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST)
    source_cfg, cfg = cfg, cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEFORM_BACKEND = "sampling"  # the exportable kernel (same results as the others)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # see the module docstring
    cfg.freeze()
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    image = _sample_image(cfg)
    adapter = TracingAdapter(model, [{"image": image}], _inference).eval()
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, MODEL_FILES[fmt])
    outputs = list(OUTPUT_NAMES if cfg.MODEL.MASK_ON else OUTPUT_NAMES[:3])
    with torch.no_grad():
        if fmt == "torchscript":
            traced = torch.jit.trace(adapter, (image,), check_trace=False)
            traced.save(path)
        else:
            dynamic = {"image": {1: "height", 2: "width"}, **{n: {0: "detections"} for n in outputs}}
            torch.onnx.export(adapter, (image,), path, dynamo=False, opset_version=opset, input_names=["image"],
                              output_names=outputs, dynamic_axes=dynamic)
    with open(os.path.join(output_dir, CONFIG_YAML), "w") as f:
        f.write(source_cfg.dump())
    info = {
        "format": fmt, "file": MODEL_FILES[fmt], "onnx_opset": opset, "outputs": outputs,
        "class_names": [str(n) for n in cfg.MODEL.CLASS_NAMES], "input_format": cfg.INPUT.FORMAT,
        "pixel_mean": [float(v) for v in cfg.MODEL.PIXEL_MEAN], "pixel_std": [float(v) for v in cfg.MODEL.PIXEL_STD],
        "score_threshold": score_threshold, "detections_per_image": int(cfg.TEST.DETECTIONS_PER_IMAGE),
        "min_size_test": int(cfg.INPUT.MIN_SIZE_TEST), "max_size_test": int(cfg.INPUT.MAX_SIZE_TEST),
        "config": CONFIG_YAML, "source_config_file": source_config_file, "weights": cfg.MODEL.WEIGHTS,
        "deform_backend": "sampling",
        "torch": torch.__version__,
    }
    with open(os.path.join(output_dir, EXPORT_JSON), "w") as f:
        json.dump(info, f, indent=1)
    logger.info("exported %s to %s", fmt, path)
    return info
