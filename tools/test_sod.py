#!/usr/bin/env python
"""Score saliency maps with the paper's metrics (Table VIII layout), or predict with a trained model first.

  python tools/test_sod.py --pred-dir PRED --gt-dir CarDD_SOD/CarDD-TE/CarDD-TE-Mask [--output DIR]
  python tools/test_sod.py --pred SGL-KRN=dirA --pred PoolNet=dirB --gt-dir GT --output DIR     (several methods)
  python tools/test_sod.py --config-file configs/SOD/u2netp.yaml [--output DIR] MODEL.WEIGHTS model_final.pth \
      [DATA.TEST_SPLIT VAL] [KEY VALUE ...]

Writes sod_metrics.json and sod_metrics.md to --output (with --config-file: OUTPUT_DIR, where the predicted maps
go too) and prints the table.

Exit codes: 0 ok, 1 error (missing or unreadable maps; the message names the file), 2 usage error.
"""
import argparse
import json
import os

from cardd_sod.cli_args import name_path
from cardd_sod.metrics import evaluate_saliency, format_markdown_table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pred-dir", help="folder of predicted maps (<stem>.png)")
    ap.add_argument("--name", default="method", help="row name for --pred-dir")
    ap.add_argument("--pred", action="append", type=name_path, default=[], metavar="NAME=DIR", help="repeatable")
    ap.add_argument("--gt-dir", help="folder of GT masks")
    ap.add_argument("--pred-suffix", default="", help="strip this suffix from prediction stems (e.g. _sal)")
    ap.add_argument("--config-file", metavar="FILE", help="SOD config: predict the test split with the model, "
                                                          "then score")
    ap.add_argument("--output", metavar="DIR", default="", help="output folder for sod_metrics.json / .md")
    ap.add_argument("--per-image", action="store_true")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides (with --config-file)")
    args = ap.parse_args(argv)
    if args.config_file:
        from cardd_sod.config import setup_sod_cfg
        from cardd_sod.engine import SODTrainer
        cfg = setup_sod_cfg(args.config_file,
                            list(args.opts) + (["OUTPUT_DIR", args.output] if args.output else []))
        rows = {cfg.MODEL.NAME: SODTrainer(cfg, progress=False).evaluate()}
        out = cfg.OUTPUT_DIR
    else:
        if args.opts:
            ap.error(f"config overrides {args.opts} need --config-file")
        methods = dict(args.pred)
        if args.pred_dir:
            methods[args.name] = args.pred_dir
        if not methods or not args.gt_dir:
            ap.error("give --gt-dir and --pred-dir/--pred (or --config-file)")
        rows = {n: evaluate_saliency(d, args.gt_dir, pred_suffix=args.pred_suffix, per_image=args.per_image)
                for n, d in methods.items()}
        out = args.output
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
