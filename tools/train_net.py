#!/usr/bin/env python
"""Train or evaluate a cardd model (detectron2-style command line).

    python tools/train_net.py --config-file configs/CarDD/dcn_plus_R_101_FPN.yaml --num-gpus 4
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file ... SOLVER.MAX_ITER 9000 --resume   # continue an interrupted run

CarDD's splits are registered from --cardd-root or $CARDD_DATASETS (the folder holding CarDD_COCO). Your own COCO
data: declare [name, json file, image folder] triples in DATASETS.REGISTER_COCO and name them in DATASETS.TRAIN /
DATASETS.TEST; the number of classes is taken from the data unless the config file or the overrides set it. Missing
files, empty annotation lists and class mismatches stop the tool at once, naming the key to set (exit status 1;
cardd_d2.data.datasets_from_cfg).
--num-gpus x --num-machines must divide SOLVER.IMS_PER_BATCH (the released recipe's images per iteration), unless
SOLVER.REFERENCE_WORLD_SIZE scales the recipe (cardd_d2.engine.world_size); otherwise the tool stops at once.
"""
import logging
import sys

import yaml
from detectron2.engine import default_argument_parser, launch

import cardd_d2  # noqa: F401  (registers cardd's models)
from cardd_d2.checkpoint.checkpointer import TrainingCheckpointer
from cardd_d2.checkpoint.class_names import check_same_names, read_checkpoint_info
from cardd_d2.data import CarDDDataError, config_keys_given
from cardd_d2.engine import CarDDTrainer, default_cardd_setup, register_datasets_for_cfg, setup_cfg
from cardd_d2.engine.world_size import check_world_size
from cardd_d2.tool_args import EXIT_STATUS_HELP, OVERRIDES_HELP, parse_args_with_overrides

logger = logging.getLogger("cardd_d2.train_net")

EPILOG = f"""examples:
  train_net.py --config-file configs/CarDD/dcn_plus_R_50_FPN.yaml --num-gpus 4
  train_net.py --config-file configs/CarDD/dcn_plus_R_50_FPN.yaml SOLVER.IMS_PER_BATCH 2 SOLVER.BASE_LR 0.0025
  train_net.py --config-file ... --resume                 # continue from the newest checkpoint in OUTPUT_DIR
  train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth

{OVERRIDES_HELP}.

{EXIT_STATUS_HELP}
"""


def _check_eval_classes(cfg):
    """Evaluating a model on a dataset with other class names would silently score the wrong classes."""
    if not cfg.MODEL.WEIGHTS or cfg.MODEL.WEIGHTS.endswith(".pkl") or "://" in cfg.MODEL.WEIGHTS:
        return
    from detectron2.data import MetadataCatalog

    saved = read_checkpoint_info(cfg.MODEL.WEIGHTS).thing_classes
    for name in cfg.DATASETS.TEST:
        names = MetadataCatalog.get(name).get("thing_classes")
        if saved is not None and names is not None:
            check_same_names(saved, f"checkpoint {cfg.MODEL.WEIGHTS}", names, f"dataset {name}")


def main(args, cfg):
    default_cardd_setup(cfg, args)
    register_datasets_for_cfg(cfg, args.cardd_root, training=not args.eval_only)  # in this process too

    if args.eval_only:
        model = CarDDTrainer.build_model(cfg)
        if not args.resume:
            _check_eval_classes(cfg)
        TrainingCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return CarDDTrainer.test(cfg, model)

    trainer = CarDDTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def build_parser():
    parser = default_argument_parser(epilog=EPILOG)
    parser.add_argument("--cardd-root", default=None,
                        help="folder that holds CarDD_COCO (default: $CARDD_DATASETS)")
    parser.add_argument("--output", default=None, metavar="DIR",
                        help="where checkpoints, logs and results go (sets OUTPUT_DIR; default: the config's)")
    return parser


def parse_args(argv=None):
    """(args, cfg): flags in any position, config overrides (KEY VALUE pairs) in ``args.opts``, and the config they
    give; a bad file, key or value is a usage error (exit status 2) before any process starts."""
    parser = build_parser()
    args = parse_args_with_overrides(parser, argv)
    try:
        cfg = setup_cfg(args.config_file, args.opts, freeze=False,
                        settings={"OUTPUT_DIR": args.output} if args.output else None)
    except (OSError, KeyError, AssertionError, ValueError, TypeError, yaml.YAMLError) as e:
        parser.error(f"config {args.config_file or '(none)'} with overrides {args.opts}: {e}")
    if not args.eval_only:  # a usage error: said before the data is looked at
        try:
            check_world_size(cfg, args.num_gpus * args.num_machines)
        except ValueError as e:
            parser.error(str(e))
    try:  # before any process starts or anything is trained; may take the class count from the data
        register_datasets_for_cfg(cfg, args.cardd_root, given_keys=config_keys_given(args.config_file, args.opts),
                                  training=not args.eval_only)
    except CarDDDataError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    cfg.freeze()
    return args, cfg


def cli(argv=None) -> int:
    args, cfg = parse_args(argv)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args, cfg))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
