"""Deployable detectors: export to TorchScript / ONNX and run the exported model without the training setup.

- ``exporter``: ``export_model(cfg, output_dir, fmt)`` traces a cardd/detectron2 R-CNN (through detectron2's
  ``TracingAdapter``) and writes the model file, ``export.json`` (what inference needs) and ``config.yaml``.
- ``runtime``: ``ExportedPredictor(export_dir)``, a drop-in for detectron2's ``DefaultPredictor`` on the exported
  model (TorchScript through torch, ONNX through onnxruntime).
"""
from .exporter import EXPORT_FORMATS, MIN_ONNX_OPSET, ExportError, export_model  # noqa: F401
from .runtime import ExportedPredictor  # noqa: F401
