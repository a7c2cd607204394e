#!/usr/bin/env python
"""Train or evaluate a cardd model (detectron2-style command line).

    python tools/train_net.py --config-file configs/CarDD/dcn_plus_R_101_FPN.yaml --num-gpus 4
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file ... --resume          # continue an interrupted run

CarDD's splits are registered from --cardd-root or $CARDD_DATASETS (the folder holding CarDD_COCO).
--num-gpus x --num-machines must divide SOLVER.IMS_PER_BATCH (the released recipe's images per iteration), unless
SOLVER.REFERENCE_WORLD_SIZE scales the recipe (cardd_d2.engine.world_size); otherwise the tool stops at once.

Exit codes: 0 ok, 2 usage error (e.g. a batch that the processes cannot split).
"""
import os
import sys

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, default_setup, launch

import cardd_d2  # noqa: F401  (registers cardd's models)
from cardd_d2.engine import CarDDTrainer, register_datasets_for_cfg, setup_cfg
from cardd_d2.engine.world_size import check_world_size


def main(args):
    cfg = setup_cfg(args.config_file, args.opts, freeze=False)
    cfg.freeze()
    default_setup(cfg, args)
    register_datasets_for_cfg(cfg, args.cardd_root)

    if args.eval_only:
        model = CarDDTrainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return CarDDTrainer.test(cfg, model)

    trainer = CarDDTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def build_parser():
    parser = default_argument_parser(epilog=__doc__)
    parser.add_argument("--cardd-root", default=None,
                        help="folder that holds CarDD_COCO (default: $CARDD_DATASETS)")
    return parser


if __name__ == "__main__":
    args = build_parser().parse_args()
    if not args.eval_only:
        try:  # before any process starts
            check_world_size(setup_cfg(args.config_file, args.opts), args.num_gpus * args.num_machines)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
