"""The ``cardd`` console script: damage assessment of photos, as a batch report or an HTTP service.

    cardd assess --config-file CFG --weights W [--classifier-weights C] INPUTS... --output DIR [KEY VALUE ...]
    cardd export --config-file CFG --weights W --format {onnx,torchscript} --output DIR [--opset 17] [KEY VALUE ...]
    cardd serve  --config-file CFG --weights W [--classifier-weights C] [--host 127.0.0.1] [--port 8000]
                 [--workers N] [--queue-size Q] [KEY VALUE ...]

Config overrides are trailing ``KEY VALUE`` pairs (detectron2 style). This module lives outside ``cardd_d2`` because
importing that package registers cardd's models with detectron2 (and so imports torch): parsing and ``--help`` import
only the standard library; the commands (:mod:`cardd_d2.cli`) import the rest when they run.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from typing import List, Optional, Sequence, Tuple

_USAGE_ERROR = """  2  usage error: bad arguments or config, no --weights / MODEL.WEIGHTS, a missing or unreadable weights file,
     class names that disagree with the model"""
EXIT_CODES = f"""exit status:
  0  every input was processed (or discarded by the gate, or skipped as a non-image found in a folder)
  1  some inputs failed (unreadable, not an image, missing path, empty folder); the others are in the report
{_USAGE_ERROR}, or report.json could not be written"""
EXPORT_EXIT_CODES = """exit status:
  0  the model was exported
  1  tracing or writing the model failed (the message says where)
  2  usage error: bad arguments or config, a model export does not support, no --weights / a missing weights file,
     an ONNX opset below 16"""
SERVE_EXIT_CODES = f"""exit status:
  0  the service was stopped
{_USAGE_ERROR}"""

# A config key as detectron2 spells it: upper-case dotted words (MODEL.WEIGHTS, SOLVER.BASE_LR, OUTPUT_DIR).
_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)+$|^[A-Z][A-Z0-9_]*_[A-Z0-9_]+$")


class UsageError(ValueError):
    pass


def split_config_overrides(tokens: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Separate ``KEY VALUE`` config overrides from other positional tokens (input paths).

    A token is a key when it is spelled like one (``MODEL.WEIGHTS``) and is not an existing path; the token after it
    is its value.
    """
    others, overrides = [], []
    it = iter(tokens)
    for tok in it:
        if _KEY.match(tok) and not os.path.exists(tok):
            value = next(it, None)
            if value is None:
                raise UsageError(f"config override {tok} has no value (overrides are KEY VALUE pairs)")
            overrides += [tok, value]
        else:
            others.append(tok)
    return others, overrides


def parse_class_names(text: Optional[str]) -> Optional[List[str]]:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise UsageError(f"--class-names: empty name in {text!r} (give comma-separated names)")
    return names


def add_model_args(p: argparse.ArgumentParser):
    p.add_argument("--config-file", default=None, metavar="FILE",
                   help="detectron2/cardd config (YAML); required unless --export is given")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="run the exported model in DIR (written by `cardd export`; its config and class names are "
                        "used, --config-file and --weights are not needed)")
    p.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime", "openvino"],
                   help="torch: eager detectron2, or a TorchScript --export; onnxruntime or openvino: an ONNX "
                        "--export (default torch)")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="detector checkpoint (sets MODEL.WEIGHTS); required, here or in the config")
    p.add_argument("--class-names", default=None, metavar="A,B,...",
                   help="comma-separated class names in class-id order (sets MODEL.CLASS_NAMES); default: the "
                        "names stored in the checkpoint, else the config's dataset (with a warning)")
    p.add_argument("--classifier-weights", default=None, metavar="FILE",
                   help="damaged/undamaged classifier checkpoint (tools/train_classifier.py); enables the gate "
                        "(sets MODEL.DAMAGE_GATE.WEIGHTS)")
    p.add_argument("--discard-threshold", type=float, default=None,
                   help="discard an image when P(undamaged) is above this (default MODEL.DAMAGE_GATE.DISCARD_THRESHOLD)")
    p.add_argument("--confidence-threshold", type=float, default=0.5, help="minimum detection score (default 0.5)")
    p.add_argument("--device", default=None, help="cpu / cuda (default: MODEL.DEVICE, cpu without CUDA)")
    p.add_argument("--max-side", type=int, default=10000,
                   help="downscale images whose longer side is larger (default 10000 px)")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="cardd", description="Car-damage assessment with a cardd detector.",
                                     epilog=EXIT_CODES, formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True)

    a = sub.add_parser("assess", help="assess images, folders or list files and write a report",
                       description="Assess photos and write report.json, annotated images and index.html.",
                       epilog=EXIT_CODES, formatter_class=fmt)
    a.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders, glob patterns or .txt/.lst lists; then optional KEY VALUE config "
                        "overrides")
    a.add_argument("--output", required=True, metavar="DIR", help="report.json, images/ and index.html go here")
    a.add_argument("--polygons", action="store_true", help="also write mask polygons")
    a.add_argument("--no-images", action="store_true", help="do not write annotated images")
    a.add_argument("--no-html", action="store_true", help="do not write index.html")
    a.add_argument("--no-progress", action="store_true")
    add_model_args(a)

    s = sub.add_parser("serve", help="run the HTTP assessment service",
                       description="Serve POST /assess (one image per request) and GET /health.",
                       epilog=SERVE_EXIT_CODES,
                       formatter_class=fmt)
    s.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-upload-mb", type=float, default=20.0,
                   help="largest accepted image file in MB (default 20); larger uploads get HTTP 413")
    s.add_argument("--workers", type=int, default=1,
                   help="inference worker threads, each with its own copy of the model (default 1)")
    s.add_argument("--queue-size", type=int, default=8,
                   help="requests that may wait for a free worker (default 8); one more gets HTTP 503 with a "
                        "Retry-After header")
    s.add_argument("--request-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="answer HTTP 504 when a request has no result after this long, queue wait included "
                        "(default 300)")
    add_model_args(s)

    e = sub.add_parser("export", help="export the detector to ONNX or TorchScript",
                       description="Trace the detector (the paper families: Mask R-CNN, Cascade, HTC, GCNet, DCN, "
                                   "DCN+; R-50 or R-101) and write the model file, export.json (class names, input "
                                   "format, pixel mean/std, score threshold, source config) and config.yaml to "
                                   "--output. Inputs of any size run on the export.",
                       epilog=EXPORT_EXIT_CODES, formatter_class=fmt)
    e.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides")
    e.add_argument("--config-file", required=True, metavar="FILE", help="detectron2/cardd config (YAML)")
    e.add_argument("--weights", default=None, metavar="FILE",
                   help="detector checkpoint (sets MODEL.WEIGHTS); required, here or in the config")
    e.add_argument("--class-names", default=None, metavar="A,B,...",
                   help="comma-separated class names in class-id order (default: the checkpoint's)")
    e.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    e.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17; at least 16)")
    e.add_argument("--confidence-threshold", type=float, default=None,
                   help="score threshold stored in the export (default: the config's SCORE_THRESH_TEST)")
    e.add_argument("--output", required=True, metavar="DIR", help="export directory")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    # Positionals after the options (trailing KEY VALUE overrides, more inputs) come back as extras.
    args, extra = parser.parse_known_args(argv)
    unknown = [t for t in extra if t.startswith("--")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        if args.command == "assess":
            args.inputs, args.opts = split_config_overrides(args.inputs + extra)
            if not args.inputs:
                raise UsageError("no INPUT given")
        else:
            args.opts += extra
        args.class_names = parse_class_names(args.class_names)
        if args.command in ("assess", "serve"):
            if args.export is None and args.config_file is None:
                raise UsageError("give --config-file FILE (and --weights), or --export DIR")
            if args.export is not None and (args.config_file or args.weights):
                raise UsageError("--export DIR carries its config and weights: drop --config-file / --weights")
            if args.runtime != "torch" and args.export is None:
                raise UsageError(f"--runtime {args.runtime} runs an ONNX export: make one with `cardd export "
                                 "--format onnx --output DIR` and give --export DIR")
        if args.command == "export" and args.opset is not None and args.format != "onnx":
            raise UsageError("--opset applies to --format onnx only")
        if args.command == "serve":
            if args.workers < 1:
                raise UsageError(f"--workers must be at least 1, got {args.workers}")
            if args.queue_size < 0:
                raise UsageError(f"--queue-size must be at least 0, got {args.queue_size}")
            if not args.request_timeout > 0:
                raise UsageError(f"--request-timeout must be positive, got {args.request_timeout}")
        if len(args.opts) % 2:
            raise UsageError(f"config overrides are KEY VALUE pairs; got {' '.join(args.opts)}")
    except UsageError as e:
        parser.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from cardd_d2.cli import run

    return run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
