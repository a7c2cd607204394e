"""The ``cardd`` console script.

    cardd assess --config-file CFG [--weights W] [--classifier-weights C] INPUTS... --output DIR
    cardd serve  --config-file CFG [--weights W] [--classifier-weights C] [--host 127.0.0.1] [--port 8000]

``assess`` exit status: 0 when every input was processed (or discarded by the gate / skipped as a non-image found in a
folder), 1 when any input failed (unreadable, not an image, missing path, empty folder), 2 on usage errors.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

logger = logging.getLogger("cardd")


def _add_model_args(p: argparse.ArgumentParser):
    p.add_argument("--config-file", required=True, metavar="FILE", help="detectron2/cardd config (YAML)")
    p.add_argument("--weights", default=None, help="detector weights (overrides MODEL.WEIGHTS)")
    p.add_argument("--classifier-weights", default=None,
                   help="damaged/undamaged classifier checkpoint (tools/train_classifier.py); enables the gate "
                        "(overrides MODEL.DAMAGE_GATE.WEIGHTS)")
    p.add_argument("--discard-threshold", type=float, default=None,
                   help="discard an image when P(undamaged) is above this (default MODEL.DAMAGE_GATE.DISCARD_THRESHOLD)")
    p.add_argument("--confidence-threshold", type=float, default=0.5, help="minimum detection score")
    p.add_argument("--device", default=None, help="cpu / cuda (default: MODEL.DEVICE, cpu without CUDA)")
    p.add_argument("--max-side", type=int, default=10000, help="downscale images whose longer side is larger")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ...")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cardd", description="CarDD car-damage assessment")
    sub = parser.add_subparsers(dest="command", required=True)

    a = sub.add_parser("assess", help="assess images, folders or list files and write a report")
    a.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, glob patterns or .txt/.lst lists")
    a.add_argument("--output", required=True, metavar="DIR", help="report.json, images/ and index.html go here")
    a.add_argument("--polygons", action="store_true", help="also write mask polygons")
    a.add_argument("--no-images", action="store_true", help="do not write annotated images")
    a.add_argument("--no-html", action="store_true", help="do not write index.html")
    a.add_argument("--no-progress", action="store_true")
    _add_model_args(a)

    s = sub.add_parser("serve", help="run the HTTP assessment service")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-upload-mb", type=float, default=20.0)
    _add_model_args(s)
    return parser


def _load(args):
    from cardd_d2.assessment.gate import DamageGate
    from cardd_d2.assessment.predictor import build_predictor, get_metadata, setup_cfg

    cfg = setup_cfg(args.config_file, weights=args.weights, opts=args.opts, device=args.device,
                    confidence_threshold=args.confidence_threshold, classifier_weights=args.classifier_weights,
                    discard_threshold=args.discard_threshold)
    gate = DamageGate.from_config(cfg)
    meta = get_metadata(cfg)
    info = {"config_file": args.config_file, "weights": cfg.MODEL.WEIGHTS, "class_names": list(meta.thing_classes),
            "gate": gate.describe() if gate else None}
    return cfg, gate, meta, info, build_predictor


def cmd_assess(args) -> int:
    from cardd_d2.assessment.report import assess

    cfg, gate, meta, info, build_predictor = _load(args)
    predictor = build_predictor(cfg)
    report = assess(args.inputs, predictor, gate, metadata=meta, output_dir=args.output,
                    score_threshold=args.confidence_threshold, with_polygons=args.polygons,
                    save_images=not args.no_images, write_html_page=not args.no_html, max_side=args.max_side,
                    progress=not args.no_progress, model_info=info)
    s = report["summary"]
    print(f"assessed {s['num_inputs']} inputs: {s['num_ok']} ok, {s['num_discarded']} discarded by the gate, "
          f"{s['num_skipped']} skipped, {s['num_failed']} failed; {s['num_instances']} damages -> {args.output}")
    for r in report["images"]:
        if r["status"] == "error":
            print(f"FAILED {r['file']}: {r['reason']}", file=sys.stderr)
    return 1 if s["num_failed"] else 0


def cmd_serve(args) -> int:
    import uvicorn

    from cardd_d2.assessment.service import create_app

    cfg, gate, meta, info, build_predictor = _load(args)
    app = create_app(lambda: build_predictor(cfg), gate=gate, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                     class_names=list(meta.thing_classes), score_threshold=args.confidence_threshold,
                     max_side=args.max_side, model_info=info)
    uvicorn.run(app, host=args.host, port=args.port)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "assess":
            return cmd_assess(args)
        return cmd_serve(args)
    except (FileNotFoundError, ValueError, KeyError) as e:
        # Bad config/weights paths or config keys: a clear message, not a traceback.
        print(f"cardd {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
