"""Run an export directory (:mod:`cardd_d2.export.exporter`) like detectron2's ``DefaultPredictor``.

``ExportedPredictor(export_dir)(image_bgr) -> {"instances": Instances}``: the same resize as the eager predictor (the
config's test resize, read from the export's ``config.yaml``), the exported graph, then the score threshold and
detectron2's ``detector_postprocess`` (box rescaling, mask pasting at 0.5), so detections match the eager model's.
TorchScript exports run on torch, ONNX exports on onnxruntime or OpenVINO (CPU; OpenVINO with its float32 precision
hint, since its CPU default may compute in bfloat16).
"""
from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["ExportedPredictor", "RUNTIMES", "load_export_info"]

# The runtimes each export format runs on; the first is the default.
RUNTIMES = {"torchscript": ("torch",), "onnx": ("onnxruntime", "openvino")}


def load_export_info(export_dir: str) -> dict:
    from .exporter import EXPORT_JSON

    path = os.path.join(export_dir, EXPORT_JSON)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not found; {export_dir} is not a `cardd export` directory")
    with open(path) as f:
        return json.load(f)


class ExportedPredictor:
    def __init__(self, export_dir: str, score_threshold=None, num_threads: int = 0, runtime=None):
        """``runtime``: one of ``RUNTIMES[format]`` (default the first); ``score_threshold`` overrides the export's;
        ``num_threads`` sets onnxruntime's / OpenVINO's inference threads (0: their default)."""
        from cardd_d2.assessment.predictor import make_metadata
        from cardd_d2.data.transforms import build_cardd_test_augmentation
        from cardd_d2.engine.setup import setup_cfg

        self.info = load_export_info(export_dir)
        self.format = self.info["format"]
        self.runtime = runtime or RUNTIMES[self.format][0]
        if self.runtime not in RUNTIMES[self.format]:
            raise ValueError(f"{export_dir} holds a {self.format} export, which runs on "
                             f"{' or '.join(RUNTIMES[self.format])}, not {self.runtime}")
        self.score_threshold = float(self.info["score_threshold"] if score_threshold is None else score_threshold)
        cfg = setup_cfg(os.path.join(export_dir, self.info["config"]))
        augs = build_cardd_test_augmentation(cfg)
        self.aug = augs[0] if augs else None
        self.input_format = self.info["input_format"]
        self.metadata = make_metadata(self.info["class_names"])
        path = os.path.join(export_dir, self.info["file"])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: the exported model named in export.json is missing")
        if self.format == "torchscript":
            import torch

            self._model = torch.jit.load(path, map_location="cpu").eval()
        elif self.runtime == "openvino":
            import openvino as ov

            config = {"INFERENCE_PRECISION_HINT": "f32"}
            if num_threads:
                config["INFERENCE_NUM_THREADS"] = int(num_threads)
            self._compiled = ov.Core().compile_model(path, "CPU", config)
        else:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            if num_threads:
                opts.intra_op_num_threads = int(num_threads)
            self._session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def _run(self, chw: np.ndarray):
        import torch

        if self.format == "torchscript":
            with torch.no_grad():
                return list(self._model(torch.from_numpy(chw)))
        if self.runtime == "openvino":
            # A request per call: one compiled model serves concurrent callers (the service's worker threads).
            result = self._compiled.create_infer_request().infer({"image": chw})
            return [torch.from_numpy(np.array(result[o])) for o in self._compiled.outputs]
        return [torch.from_numpy(o) for o in self._session.run(None, {"image": chw})]

    def __call__(self, image_bgr: np.ndarray) -> dict:
        from detectron2.modeling.postprocessing import detector_postprocess
        from detectron2.structures import Boxes, Instances

        if self.input_format == "RGB":
            image_bgr = image_bgr[:, :, ::-1]
        height, width = image_bgr.shape[:2]
        image = self.aug.get_transform(image_bgr).apply_image(image_bgr) if self.aug is not None else image_bgr
        chw = np.ascontiguousarray(image.astype("float32").transpose(2, 0, 1))
        outputs = dict(zip(self.info["outputs"], self._run(chw)))
        inst = Instances(tuple(chw.shape[1:]))
        inst.pred_boxes = Boxes(outputs["boxes"])
        inst.scores = outputs["scores"]
        inst.pred_classes = outputs["classes"].long()
        if "mask_probs" in outputs:
            inst.pred_masks = outputs["mask_probs"]
        # detectron2's fast_rcnn_inference keeps scores > threshold
        inst = inst[inst.scores > self.score_threshold]
        return {"instances": detector_postprocess(inst, height, width)}
