#!/usr/bin/env python
"""Run a CarDD detector on images, folders, glob patterns or videos; save overlays and one JSON per image.

    python tools/demo.py --config-file configs/CarDD/mask_rcnn_R_50_FPN.yaml --input photos/ --output out/ \
        --confidence-threshold 0.5 --opts MODEL.WEIGHTS model_final.pth

Runs on CPU when CUDA is not available. Class names/colours come from cfg.DATASETS.TEST[0] when that dataset is
registered, else CarDD's. Unreadable files are reported and skipped; exit status 1 when any input failed.
"""
import argparse
import logging
import sys


def get_parser():
    p = argparse.ArgumentParser(description="CarDD demo (detectron2 predictor + Visualizer)")
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--input", nargs="+", required=True,
                   help="image files, folders, glob patterns ('imgs/*.jpg') or video files")
    p.add_argument("--output", default="demo_output", help="output folder")
    p.add_argument("--confidence-threshold", type=float, default=0.5)
    p.add_argument("--polygons", action="store_true", help="also store mask polygons in the JSON")
    p.add_argument("--max-video-frames", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ...")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from cardd_d2.assessment.demo import run_demo
    from cardd_d2.assessment.predictor import build_predictor, get_metadata, setup_cfg

    cfg = setup_cfg(args.config_file, opts=args.opts, confidence_threshold=args.confidence_threshold)
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
