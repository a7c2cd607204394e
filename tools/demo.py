#!/usr/bin/env python
"""Run a cardd detector on images, folders, glob patterns or videos; save overlays and one JSON per image.

    python tools/demo.py --config-file configs/CarDD/mask_rcnn_R_50_FPN.yaml --weights model_final.pth \\
        --input photos/ --output out/ --confidence-threshold 0.5 [KEY VALUE ...]

Runs on CPU when CUDA is not available. Predictions are labelled with the class names stored in the checkpoint
(else the config's dataset, with a warning; --class-names sets them). Unreadable files are reported and skipped.
"""
import argparse
import logging
import sys

from cardd_cli import UsageError, parse_class_names, split_config_overrides

EXIT_CODES = """exit status:
  0  every input was processed
  1  some inputs failed (reported on stderr); the others were processed
  2  usage error: bad arguments or config, no --weights / MODEL.WEIGHTS, a missing or unreadable weights file,
     class names that disagree with the model"""


def get_parser():
    p = argparse.ArgumentParser(description="cardd demo (detectron2 predictor + Visualizer)", epilog=EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="detector checkpoint (sets MODEL.WEIGHTS); required, here or in the config")
    p.add_argument("--class-names", default=None, metavar="A,B,...",
                   help="comma-separated class names in class-id order (sets MODEL.CLASS_NAMES)")
    p.add_argument("--input", nargs="+", required=True,
                   help="image files, folders, glob patterns ('imgs/*.jpg') or video files")
    p.add_argument("--output", default="demo_output", metavar="DIR", help="output folder")
    p.add_argument("--confidence-threshold", type=float, default=0.5)
    p.add_argument("--polygons", action="store_true", help="also store mask polygons in the JSON")
    p.add_argument("--max-video-frames", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config overrides")
    return p


def main(argv=None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    try:
        args.input, more_opts = split_config_overrides(args.input)  # overrides written right after --input
        class_names = parse_class_names(args.class_names)
    except UsageError as e:
        parser.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from cardd_d2.assessment.demo import run_demo
    from cardd_d2.assessment.predictor import build_predictor, get_metadata, setup_cfg

    try:
        cfg = setup_cfg(args.config_file, weights=args.weights, opts=more_opts + args.opts,
                        confidence_threshold=args.confidence_threshold, class_names=class_names)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 2
    predictor = build_predictor(cfg)
    res = run_demo(args.input, predictor, get_metadata(cfg), args.output,
                   score_threshold=args.confidence_threshold, with_polygons=args.polygons,
                   progress=not args.no_progress, max_video_frames=args.max_video_frames)
    print(f"{len(res['processed'])} processed, {len(res['skipped'])} skipped, {len(res['failed'])} failed "
          f"-> {args.output}")
    for path, reason in res["failed"]:
        print(f"FAILED {path}: {reason}", file=sys.stderr)
    return 1 if res["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
