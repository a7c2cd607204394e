#!/usr/bin/env python
"""Train (and test) a CarDD SOD model.

  python tools/train_sod.py --config-file configs/SOD/u2netp.yaml [--output DIR] [KEY VALUE ...]

Trailing KEY VALUE pairs override config keys (cardd_sod/config.py), e.g. ``SOLVER.EPOCHS 2 DATA.ROOT
datasets/CarDD_SOD``.  ``--output`` sets OUTPUT_DIR (checkpoints, TensorBoard logs, predictions, metrics,
train_result.json).

Exit codes: 0 ok, 1 error (missing data, bad config value; the message names the file or key), 2 usage error.
"""
import argparse
import json
import logging
import os

from cardd_sod.config import setup_sod_cfg
from cardd_sod.engine import SODTrainer


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", required=True, metavar="FILE", help="configs/SOD/<model>.yaml")
    ap.add_argument("--output", metavar="DIR", help="output folder (OUTPUT_DIR)")
    ap.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoints/last_checkpoint")
    ap.add_argument("--eval-only", action="store_true", help="only predict + score the test split")
    ap.add_argument("--no-eval", action="store_true", help="skip the evaluation at the end")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    cfg = setup_sod_cfg(args.config_file, list(args.opts) + (["OUTPUT_DIR", args.output] if args.output else []))
    trainer = SODTrainer(cfg, progress=not args.no_progress)
    if args.eval_only:
        if args.resume:
            trainer.resume_or_load(True)
        result = {"metrics": trainer.evaluate()}
    else:
        result = trainer.train(resume=args.resume, evaluate=False if args.no_eval else None)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    with open(os.path.join(cfg.OUTPUT_DIR, "train_result.json"), "w") as f:
        json.dump(result, f, indent=2, default=str)
    if "metrics" in result:
        print(json.dumps({k: v for k, v in result["metrics"].items() if k != "per_image"}, indent=2))
    return result


if __name__ == "__main__":
    main()
