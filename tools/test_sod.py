#!/usr/bin/env python
"""Score saliency maps with the paper's metrics (Table VIII layout), or predict with a trained model first.

  python tools/test_sod.py --pred-dir PRED --gt-dir CarDD_SOD/CarDD-TE/CarDD-TE-Mask [--out DIR]
  python tools/test_sod.py --pred SGL-KRN=dirA --pred PoolNet=dirB --gt-dir GT --out DIR     (several methods)
  python tools/test_sod.py --config configs/SOD/u2netp.yaml --weights model_final.pth [KEY VALUE ...]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cardd_sod.config import parse_named_paths  # noqa: E402
from cardd_sod.metrics import evaluate_saliency, format_markdown_table  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pred-dir", help="folder of predicted maps (<stem>.png)")
    ap.add_argument("--name", default="method", help="row name for --pred-dir")
    ap.add_argument("--pred", action="append", help="NAME=DIR, repeatable")
    ap.add_argument("--gt-dir", help="folder of GT masks")
    ap.add_argument("--pred-suffix", default="", help="strip this suffix from prediction stems (e.g. _sal)")
    ap.add_argument("--config", help="SOD config: predict the test split with the model, then score")
    ap.add_argument("--weights", default="", help="model weights / trainer checkpoint for --config")
    ap.add_argument("--split", default="", help="SOD split to predict with --config (default DATA.TEST_SPLIT)")
    ap.add_argument("--out", default="", help="output folder for sod_metrics.json / .md")
    ap.add_argument("--per-image", action="store_true")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for --config")
    args = ap.parse_args(argv)
    if args.config:
        from cardd_sod.config import setup_sod_cfg
        from cardd_sod.engine import SODTrainer
        opts = list(args.opts) + (["MODEL.WEIGHTS", args.weights] if args.weights else [])
        cfg = setup_sod_cfg(args.config, opts)
        if args.out:
            cfg.OUTPUT_DIR = args.out
        res = SODTrainer(cfg, progress=False).evaluate(split=args.split or None)
        rows = {cfg.MODEL.NAME: res}
        out = args.out or cfg.OUTPUT_DIR
    else:
        methods = parse_named_paths(args.pred, "--pred")
        if args.pred_dir:
            methods[args.name] = args.pred_dir
        if not methods or not args.gt_dir:
            ap.error("give --gt-dir and --pred-dir/--pred (or --config)")
        rows = {n: evaluate_saliency(d, args.gt_dir, pred_suffix=args.pred_suffix, per_image=args.per_image)
                for n, d in methods.items()}
        out = args.out
    table = format_markdown_table({k: {c: v for c, v in r.items() if c != "per_image"} for k, r in rows.items()},
                                  extra=True)
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "sod_metrics.json"), "w") as f:
            json.dump(rows, f, indent=2)
        with open(os.path.join(out, "sod_metrics.md"), "w") as f:
            f.write(table)
    print(table)
    return rows


if __name__ == "__main__":
    main()
