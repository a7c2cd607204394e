"""`cardd export`: exported tiny random-init models give the eager detectron2 detections (two image sizes from one
export), and bad exports fail with a clear error."""
import json
import os

import numpy as np
import pytest
import torch
from tiny_config import TINY_OVERRIDES, config_path

# An R-50 thin enough for CPU tests (DCN+ needs bottleneck blocks), thin heads, a few detections per image.
TINY_EXPORT_OVERRIDES = TINY_OVERRIDES + [
    "MODEL.RESNETS.WIDTH_PER_GROUP", "8",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "32",
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "16",
    "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "128",
    "TEST.DETECTIONS_PER_IMAGE", "5",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
]
MODELS = {"mask_rcnn": "CarDD/mask_rcnn_R_50_FPN.yaml", "dcn_plus": "CarDD/dcn_plus_R_50_FPN.yaml",
          "dcn": "CarDD/dcn_R_50_FPN.yaml", "gcnet": "CarDD/gcnet_R_50_FPN.yaml",
          "cascade": "CarDD/cascade_mask_rcnn_R_50_FPN.yaml", "htc": "CarDD/htc_R_50_FPN.yaml",
          "htc_semantic": "CarDD/htc_semantic_R_50_FPN.yaml"}
# (height, width) of the BGR test images: a landscape and a portrait one, neither the trace's sample size.
IMAGE_SIZES = [(60, 90), (110, 70)]


def _cfg(model, weights, tmp_path, *extra):
    from cardd_d2.assessment.predictor import setup_cfg
    from cardd_d2.engine.setup import setup_cfg as engine_cfg

    path = tmp_path / f"{model}.yaml"
    path.write_text(engine_cfg(config_path(MODELS[model]), TINY_EXPORT_OVERRIDES, freeze=False).dump())
    return setup_cfg(str(path), weights=weights, opts=list(extra))


def _random_checkpoint(model, path):
    from detectron2.modeling import build_model

    import cardd_d2  # noqa: F401
    from cardd_d2.checkpoint.class_names import THING_CLASSES_KEY
    from cardd_d2.data.categories import CARDD_CLASS_NAMES
    from cardd_d2.engine.setup import setup_cfg

    torch.manual_seed(0)
    net = build_model(setup_cfg(config_path(MODELS[model]), TINY_EXPORT_OVERRIDES))
    torch.save({"model": net.state_dict(), THING_CLASSES_KEY: list(CARDD_CLASS_NAMES)}, path)
    return path


def _images():
    rng = np.random.default_rng(0)
    return [(rng.random((h, w, 3)) * 255).astype(np.uint8) for h, w in IMAGE_SIZES]


def assert_same_detections(eager, exported, what):
    a, b = eager["instances"], exported["instances"]
    assert len(a) == len(b) > 0, f"{what}: {len(a)} eager vs {len(b)} exported detections"
    assert b.image_size == a.image_size
    assert torch.equal(a.pred_classes, b.pred_classes), what
    ba, bb = a.pred_boxes.tensor, b.pred_boxes.tensor
    assert ((ba - bb).abs() <= 1e-3 * ba.abs().clamp(min=1.0)).all(), f"{what}: boxes {ba} vs {bb}"
    assert (a.scores - b.scores).abs().max() <= 1e-4, f"{what}: scores {a.scores} vs {b.scores}"
    ma, mb = a.pred_masks.bool(), b.pred_masks.bool()
    union = (ma | mb).flatten(1).sum(1)
    iou = torch.where(union > 0, (ma & mb).flatten(1).sum(1) / union.clamp(min=1), torch.ones_like(union).float())
    assert (iou >= 0.99).all(), f"{what}: mask IoU {iou}"


class _Exports(dict):
    """(model, format) -> (export dir, eager predictor, cfg), exported on first use and kept for the module."""

    def __init__(self, root):
        super().__init__()
        self.root, self.eager = root, {}

    def __missing__(self, key):
        from cardd_d2.assessment.predictor import build_predictor
        from cardd_d2.export import export_model

        model, fmt = key
        if model not in self.eager:
            weights = _random_checkpoint(model, str(self.root / f"{model}.pth"))
            cfg = _cfg(model, weights, self.root)
            self.eager[model] = (build_predictor(cfg), cfg)
        eager, cfg = self.eager[model]
        d = str(self.root / f"{model}_{fmt}")
        export_model(cfg, d, fmt, source_config_file=f"{model}.yaml")
        self[key] = (d, eager, cfg)
        return self[key]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return _Exports(tmp_path_factory.mktemp("exports"))


# Every paper family in its R-50 form (R-101 differs only in depth), in both formats, on every runtime.
EXPORTED = [(model, fmt, runtime) for model in MODELS
            for fmt, runtime in (("torchscript", "torch"), ("onnx", "onnxruntime"), ("onnx", "openvino"))]


@pytest.mark.parametrize("model,fmt,runtime", EXPORTED)
def test_exported_model_matches_eager(exports, model, fmt, runtime):
    from cardd_d2.export import ExportedPredictor

    d, eager, _ = exports[model, fmt]
    exported = ExportedPredictor(d, runtime=runtime)
    assert exported.runtime == runtime
    for img in _images():
        assert_same_detections(eager(img), exported(img), f"{model} {fmt} on {runtime}, {img.shape[:2]}")


def test_export_dir_carries_what_inference_needs(exports):
    from cardd_d2.data.categories import CARDD_CLASS_NAMES

    d, _, cfg = exports["dcn_plus", "onnx"]
    info = json.load(open(os.path.join(d, "export.json")))
    assert info["class_names"] == list(CARDD_CLASS_NAMES) and info["input_format"] == cfg.INPUT.FORMAT
    assert info["pixel_mean"] == list(cfg.MODEL.PIXEL_MEAN) and info["pixel_std"] == list(cfg.MODEL.PIXEL_STD)
    assert info["score_threshold"] == cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST and info["onnx_opset"] >= 16
    assert info["source_config_file"] == "dcn_plus.yaml"
    assert os.path.isfile(os.path.join(d, info["file"])) and os.path.isfile(os.path.join(d, info["config"]))
    import onnx

    def ops(graph):  # with the subgraphs of If nodes (NMS sits in one)
        found = set()
        for node in graph.node:
            found.add(node.op_type)
            for attr in node.attribute:
                for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    found |= ops(g)
        return found

    found = ops(onnx.load(os.path.join(d, info["file"])).graph)
    assert {"GridSample", "RoiAlign", "NonMaxSuppression"} <= found  # deformable convs through the sampling kernel
    assert "DeformConv" not in found


def test_score_threshold_applied_after_the_graph_equals_eager(exports, tmp_path):
    """The graph is traced without a threshold; thresholding after it keeps what the thresholded model keeps."""
    from cardd_d2.assessment.predictor import build_predictor
    from cardd_d2.export import ExportedPredictor

    d, eager, cfg = exports["mask_rcnn", "onnx"]
    img = _images()[0]
    scores = eager(img)["instances"].scores
    thr = float((scores.max() + scores.min()) / 2)
    strict = build_predictor(_cfg("mask_rcnn", cfg.MODEL.WEIGHTS, tmp_path, "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
                                  str(thr)))
    ref = strict(img)
    assert 0 < len(ref["instances"]) < len(scores)
    assert_same_detections(ref, ExportedPredictor(d, score_threshold=thr)(img), f"threshold {thr}")


def test_bad_exports_fail_clearly(tmp_path):
    from cardd_d2.export import ExportError, export_model

    weights = str(tmp_path / "w.pth")
    torch.save({"model": {}}, weights)
    cfg = _cfg("mask_rcnn", weights, tmp_path)
    retinanet = cfg.clone()
    retinanet.defrost()
    retinanet.MODEL.META_ARCHITECTURE = "RetinaNet"
    with pytest.raises(ExportError, match="cannot export MODEL.META_ARCHITECTURE='RetinaNet'"):
        export_model(retinanet, str(tmp_path / "c"), "onnx")
    with pytest.raises(ExportError, match="opset 13 .*opset >= 16"):
        export_model(cfg, str(tmp_path / "o"), "onnx", opset=13)
    with pytest.raises(ExportError, match="format"):
        export_model(cfg, str(tmp_path / "o"), "tflite")
    missing = cfg.clone()
    missing.defrost()
    missing.MODEL.WEIGHTS = str(tmp_path / "gone.pth")
    with pytest.raises(ExportError, match="weights file not found: .*gone.pth"):
        export_model(missing, str(tmp_path / "m"), "torchscript")
    assert not os.path.exists(tmp_path / "c") and not os.path.exists(tmp_path / "m")


def test_cardd_export_command(tmp_path, capsys):
    """`cardd export`: exit 0 and a loadable export; the export errors exit 2 with one line naming the problem."""
    import cardd_cli

    from cardd_d2.export import ExportedPredictor
    from cardd_d2.engine.setup import setup_cfg

    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(setup_cfg(config_path(MODELS["mask_rcnn"]), TINY_EXPORT_OVERRIDES, freeze=False).dump())
    weights = _random_checkpoint("mask_rcnn", str(tmp_path / "w.pth"))
    base = ["export", "--config-file", str(cfg_file), "--weights", weights]
    out = tmp_path / "ts"
    assert cardd_cli.main(base + ["--format", "torchscript", "--output", str(out), "--confidence-threshold", "0.01",
                                  "TEST.DETECTIONS_PER_IMAGE", "4"]) == 0
    pred = ExportedPredictor(str(out))
    assert pred.score_threshold == 0.01 and pred.info["detections_per_image"] == 4
    assert pred.info["source_config_file"] == str(cfg_file)
    assert len(pred(_images()[0])["instances"]) <= 4
    capsys.readouterr()
    assert cardd_cli.main(["assess", "x.jpg", "--export", str(out), "--runtime", "onnxruntime", "--output",
                           str(tmp_path / "r")]) == 2
    assert "torchscript export, which runs on --runtime torch, not onnxruntime" in capsys.readouterr().err
    for argv, expected in [
        (base + ["--format", "onnx", "--output", str(tmp_path / "c"), "MODEL.ROI_HEADS.NAME", "Res5ROIHeads"],
         "MODEL.ROI_HEADS.NAME='Res5ROIHeads'"),
        (base[:-1] + [str(tmp_path / "gone.pth"), "--format", "onnx", "--output", str(tmp_path / "g")], "gone.pth"),
        (base + ["--format", "onnx", "--opset", "13", "--output", str(tmp_path / "o")], "opset >= 16"),
    ]:
        assert cardd_cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("cardd export: error:") and expected in err and "Traceback" not in err, err
    with pytest.raises(SystemExit) as e:
        cardd_cli.main(base + ["--format", "torchscript", "--opset", "17", "--output", str(tmp_path / "x")])
    assert e.value.code == 2 and "--opset applies to --format onnx only" in capsys.readouterr().err


def test_assess_onnxruntime_report_equals_torch(synthetic_cardd, tmp_path):
    """`cardd assess --export DIR --runtime onnxruntime` (and openvino) on the synthetic test split: the report of
    eager torch, detection for detection (the report rounds boxes to 0.01 px, scores to 1e-6)."""
    import cardd_cli

    from cardd_d2.assessment import validate_report
    from cardd_d2.engine.setup import setup_cfg

    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(setup_cfg(config_path(MODELS["mask_rcnn"]), TINY_EXPORT_OVERRIDES, freeze=False).dump())
    weights = _random_checkpoint("mask_rcnn", str(tmp_path / "w.pth"))
    exp = str(tmp_path / "onnx")
    assert cardd_cli.main(["export", "--config-file", str(cfg_file), "--weights", weights, "--format", "onnx",
                           "--output", exp]) == 0
    test_dir = synthetic_cardd["image_dirs"]["test"]
    common = ["--no-images", "--no-html", "--no-progress", "--confidence-threshold", "0.0"]
    assert cardd_cli.main(["assess", test_dir, "--config-file", str(cfg_file), "--weights", weights,
                           "--output", str(tmp_path / "torch")] + common) == 0
    for runtime in ("onnxruntime", "openvino"):
        assert cardd_cli.main(["assess", test_dir, "--export", exp, "--runtime", runtime,
                               "--output", str(tmp_path / runtime)] + common) == 0
    reports = [json.load(open(tmp_path / d / "report.json")) for d in ("torch", "onnxruntime", "openvino")]
    for r in reports:
        validate_report(r)
    ref = reports[0]
    for runtime, got in zip(("onnxruntime", "openvino"), reports[1:]):
        assert got["model"]["runtime"] == runtime and got["model"]["export"] == exp
        _assert_same_report(ref, got)
    _check_service_on_export(exp, test_dir, ref)


def _assert_same_report(ref, got):
    from cardd_d2.assessment import rle_to_mask

    assert got["model"]["class_names"] == ref["model"]["class_names"]
    assert [i["file"] for i in ref["images"]] == [i["file"] for i in got["images"]] and len(ref["images"]) >= 4
    n = 0
    for a_img, b_img in zip(ref["images"], got["images"]):
        assert a_img["status"] == b_img["status"] == "ok"
        assert len(a_img["instances"]) == len(b_img["instances"]), a_img["file"]
        for a, b in zip(a_img["instances"], b_img["instances"]):
            assert a["class"] == b["class"] and abs(a["score"] - b["score"]) <= 1e-4, (a_img["file"], a, b)
            for u, v in zip(a["bbox"], b["bbox"]):
                assert abs(u - v) <= max(1e-3 * abs(u), 0.01 + 1e-6), (a_img["file"], a["bbox"], b["bbox"])
            ma, mb = rle_to_mask(a["mask"]).astype(bool), rle_to_mask(b["mask"]).astype(bool)
            union = (ma | mb).sum()
            assert union == 0 or (ma & mb).sum() / union >= 0.99
            n += 1
    assert n > 0


def _check_service_on_export(exp, test_dir, ref):
    """The service on the same export (what `cardd serve --export DIR --runtime onnxruntime` builds)."""
    from fastapi.testclient import TestClient

    from cardd_d2.assessment.predictor import build_predictor, setup_export_cfg
    from cardd_d2.assessment.service import create_app

    cfg = setup_export_cfg(exp, confidence_threshold=0.0)
    first = ref["images"][0]
    app = create_app(lambda: build_predictor(cfg, export_dir=exp), workers=2, class_names=list(cfg.MODEL.CLASS_NAMES))
    with TestClient(app) as c, open(os.path.join(test_dir, first["file"]), "rb") as f:
        r = c.post("/assess", files={"file": (first["file"], f.read(), "image/jpeg")})
    assert r.status_code == 200, r.text
    served = r.json()["images"][0]["instances"]
    assert [(d["class"], round(d["score"], 4)) for d in served] == [(d["class"], round(d["score"], 4))
                                                                     for d in first["instances"]]


def test_runtime_flags_checked(tmp_path, capsys):
    import cardd_cli

    for argv, expected in [
        (["assess", "x.jpg", "--config-file", "c.yaml", "--runtime", "onnxruntime", "--output", "o"], "--export DIR"),
        (["assess", "x.jpg", "--output", "o"], "--config-file FILE"),
        (["serve", "--export", "d", "--weights", "w.pth"], "drop --config-file / --weights"),
    ]:
        with pytest.raises(SystemExit) as e:
            cardd_cli.main(argv)
        assert e.value.code == 2 and expected in capsys.readouterr().err, argv
