#!/usr/bin/env python
"""Train (and test) a CarDD SOD model: python tools/train_sod.py --config configs/SOD/u2netp.yaml [KEY VALUE ...]

Overrides are dotted config keys (cardd_sod/config.py), e.g. ``SOLVER.EPOCHS 2 DATA.ROOT datasets/CarDD_SOD``.
"""
import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cardd_sod.config import setup_sod_cfg  # noqa: E402
from cardd_sod.engine import SODTrainer  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="configs/SOD/<model>.yaml")
    ap.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoints/last_checkpoint")
    ap.add_argument("--eval-only", action="store_true", help="only predict + score the test split")
    ap.add_argument("--no-eval", action="store_true", help="skip the evaluation at the end")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    cfg = setup_sod_cfg(args.config, args.opts)
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
