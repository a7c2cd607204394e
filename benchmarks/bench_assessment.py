#!/usr/bin/env python
"""Assessment throughput (images/s) on CPU and, when available, CUDA; JSON on stdout (and --output).

For each device: the detector alone (DefaultPredictor on a 1333x800 BGR array), and the whole per-image assessment
(gate optional, instance serialisation with RLE masks, repair ordering; no file writing) via ``assess_image``.
Random weights unless --weights is given; random images, so detections are whatever the model makes of noise
(``TEST.DETECTIONS_PER_IMAGE`` caps serialisation work). Keep runs short: the default 2 images take ~15 s on an idle 2-core CPU (5.45 s per R-50 inference).

    python benchmarks/bench_assessment.py --images 3 --warmup 1 [--config-file ...] [--devices cpu cuda]
"""
import argparse
import os
import platform
import sys
import time

import numpy as np
from bench_output import emit_json  # benchmarks/ (the script folder) is on sys.path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _random_weights(config_file, opts):
    """A random-init checkpoint of the config's model (with CarDD's class names), in a temporary folder."""
    import tempfile

    import torch
    from detectron2.modeling import build_model

    from cardd_d2.checkpoint.class_names import THING_CLASSES_KEY
    from cardd_d2.data.categories import CARDD_CLASS_NAMES
    from cardd_d2.engine.setup import setup_cfg

    cfg = setup_cfg(config_file, list(opts) + ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    path = os.path.join(tempfile.mkdtemp(prefix="bench_assessment_"), "random_init.pth")
    torch.save({"model": build_model(cfg).state_dict(), THING_CLASSES_KEY: list(CARDD_CLASS_NAMES)}, path)
    return path


def run(device, args):
    import torch

    from cardd_d2.assessment.gate import DamageGate
    from cardd_d2.assessment.classifier import build_classifier
    from cardd_d2.assessment.images import LoadedImage
    from cardd_d2.assessment.predictor import build_predictor, get_metadata, setup_cfg
    from cardd_d2.assessment.report import assess_image

    cfg = setup_cfg(args.config_file, weights=args.weights_file, device=device, opts=args.opts,
                    confidence_threshold=args.confidence_threshold)
    pred = build_predictor(cfg)
    names = list(get_metadata(cfg).thing_classes)
    gate = None
    if args.gate:
        gate = DamageGate(build_classifier("vgg16"), input_size=224, discard_threshold=1.0, device=device)
    rng = np.random.default_rng(0)
    imgs = [(rng.random((args.height, args.width, 3)) * 255).astype(np.uint8) for _ in range(args.images)]
    sync = (lambda: torch.cuda.synchronize()) if device.startswith("cuda") else (lambda: None)
    for im in imgs[: args.warmup]:
        pred(im)
    sync()
    t = time.perf_counter()
    for im in imgs:
        pred(im)
    sync()
    det_s = time.perf_counter() - t
    n_inst = 0
    t = time.perf_counter()
    for k, im in enumerate(imgs):
        li = LoadedImage(bgr=im, source=f"bench{k}", original_size=im.shape[:2])
        rec, _ = assess_image(li, pred, gate, class_names=names, score_threshold=args.confidence_threshold)
        n_inst += len(rec["instances"])
    sync()
    full_s = time.perf_counter() - t
    return {"device": device, "detector_images_per_s": len(imgs) / det_s, "assess_images_per_s": len(imgs) / full_s,
            "detector_s_per_image": det_s / len(imgs), "assess_s_per_image": full_s / len(imgs),
            "instances_serialised": n_inst, "gate": bool(gate),
            "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", default=os.path.join(REPO, "configs", "CarDD", "mask_rcnn_R_50_FPN.yaml"))
    p.add_argument("--weights", default="")
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--width", type=int, default=1333)
    p.add_argument("--height", type=int, default=800)
    p.add_argument("--confidence-threshold", type=float, default=0.05)
    p.add_argument("--gate", action="store_true", help="also run a (random) VGG16 gate that never discards")
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--output", default=None)
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config overrides")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.weights_file = args.weights or _random_weights(args.config_file, args.opts)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    res = {"benchmark": "assessment", "image_size": [args.width, args.height], "images": args.images,
           "config_file": os.path.relpath(args.config_file, REPO), "weights": args.weights or "random init",
           "torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "python": platform.python_version(),
           "results": [run(d, args) for d in devices]}
    emit_json(res, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
