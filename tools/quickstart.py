#!/usr/bin/env python
"""The README's main job: generate synthetic CarDD (unless $CARDD_DATASETS holds a real copy), train a small model
from random initialisation on CPU, evaluate it with CarDDEvaluator and print the tables.

    python tools/quickstart.py                      # DCN+ (narrow R-50) on synthetic data
    python tools/quickstart.py --model mask_rcnn    # the Mask R-CNN baseline on the same data
    python tools/quickstart.py --iters 100          # shorter run

Writes OUTPUT/quickstart_summary.json with the reached AP and the wall time, OUTPUT/predictions.png (test images:
ground truth beside the trained model's masks and class names) and OUTPUT/loss_curve.png.
"""
import argparse
import json
import os
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

QUICKSTART_CONFIGS = {
    "dcn_plus": "configs/CarDD/quickstart/dcn_plus_R_50_narrow_FPN_scratch.yaml",
    "mask_rcnn": "configs/CarDD/quickstart/mask_rcnn_R_50_narrow_FPN_scratch.yaml",
}
# Synthetic split sizes: enough variety to learn six classes in a few hundred iterations, generated in seconds.
SYNTHETIC_SPLITS = (320, 40, 80)
# Predictions drawn in predictions.png: a small model's useful detections sit well below the usual 0.5.
PICTURE_SCORE_THRESHOLD = 0.3


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(QUICKSTART_CONFIGS), default="dcn_plus")
    p.add_argument("--iters", type=int, default=None, help="training iterations (default: the config's)")
    p.add_argument("--data", default=os.path.join(REPO, "datasets", "synthetic_cardd"),
                   help="where the synthetic set is written / reused")
    p.add_argument("--output", default=None, help="output folder (default: the config's OUTPUT_DIR)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument("--splits", type=int, nargs=3, default=list(SYNTHETIC_SPLITS), metavar=("TRAIN", "VAL", "TEST"),
                   help="synthetic images per split")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra config overrides KEY VALUE ...")
    return p.parse_args(argv)


def dataset_root(args) -> str:
    """A real CarDD copy from $CARDD_DATASETS when it has CarDD_COCO, else the (re)generated synthetic set."""
    from cardd_sod.data.layout import COCO_DIR

    real = os.environ.get("CARDD_DATASETS")
    if real and os.path.isdir(os.path.join(real, COCO_DIR)):
        print(f"[quickstart] using the CarDD copy at {real} ($CARDD_DATASETS)")
        return real
    from cardd_d2.data.synthetic import make_synthetic_cardd

    stamp = os.path.join(args.data, "quickstart.json")
    wanted = {"num_images": list(args.splits), "seed": args.seed}
    if os.path.isfile(stamp) and json.load(open(stamp)) == wanted:
        print(f"[quickstart] reusing synthetic CarDD at {args.data}")
        return args.data
    t0 = time.time()
    make_synthetic_cardd(args.data, num_images=tuple(args.splits), seed=args.seed)
    with open(stamp, "w") as f:
        json.dump(wanted, f)
    print(f"[quickstart] generated synthetic CarDD {tuple(args.splits)} (train/val/test) at {args.data} "
          f"in {time.time() - t0:.0f} s")
    return args.data


def write_pictures(cfg, test_name: str, num_images: int = 6) -> dict:
    """The test images with ground truth beside the final model's predictions, and the training-loss curve."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.engine import DefaultPredictor

    from cardd_d2.evaluation.figures import plot_loss_curve, prediction_grid

    pred_cfg = cfg.clone()
    pred_cfg.defrost()
    pred_cfg.MODEL.WEIGHTS = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    pred_cfg.freeze()
    out = {
        "predictions_png": prediction_grid(DefaultPredictor(pred_cfg), DatasetCatalog.get(test_name),
                                           MetadataCatalog.get(test_name),
                                           os.path.join(cfg.OUTPUT_DIR, "predictions.png"),
                                           score_threshold=PICTURE_SCORE_THRESHOLD, max_images=num_images),
        "loss_curve_png": plot_loss_curve(os.path.join(cfg.OUTPUT_DIR, "metrics.json"),
                                          os.path.join(cfg.OUTPUT_DIR, "loss_curve.png"),
                                          keys=("total_loss", "loss_cls", "loss_mask", "loss_rpn_cls")),
    }
    return out


def main(argv=None):
    args = parse_args(argv)
    from detectron2.engine import default_setup

    from cardd_d2.engine import CarDDTrainer, inference_dir, register_datasets_for_cfg, setup_cfg
    from cardd_d2.evaluation import load_results_json

    t_start = time.time()
    root = dataset_root(args)
    opts = list(args.opts)
    if args.output:
        opts += ["OUTPUT_DIR", args.output]
    cfg = setup_cfg(os.path.join(REPO, QUICKSTART_CONFIGS[args.model]), opts, freeze=False)
    if args.iters:
        # keep the LR drops at the same fractions of the run as in the config
        scale = args.iters / cfg.SOLVER.MAX_ITER
        cfg.SOLVER.STEPS = tuple(max(1, min(args.iters - 1, round(s * scale))) for s in cfg.SOLVER.STEPS)
        cfg.SOLVER.MAX_ITER = args.iters
    cfg.freeze()
    default_setup(cfg, argparse.Namespace(config_file=QUICKSTART_CONFIGS[args.model], eval_only=False, opts=opts))
    register_datasets_for_cfg(cfg, root)

    t_train = time.time()
    trainer = CarDDTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    elapsed = time.time() - t_start

    test_name = cfg.DATASETS.TEST[0]
    results_dir = inference_dir(cfg, test_name)
    pictures = write_pictures(cfg, test_name)
    results = load_results_json(os.path.join(results_dir, "results.json"))
    summary = {
        "model": args.model,
        "config": QUICKSTART_CONFIGS[args.model],
        "data": root,
        "iterations": cfg.SOLVER.MAX_ITER,
        "train_and_eval_seconds": round(time.time() - t_train, 1),
        "total_seconds": round(elapsed, 1),
        "segm_AP": results["segm"]["AP"],
        "segm_AP50": results["segm"]["AP50"],
        "bbox_AP": results["bbox"]["AP"],
        "bbox_AP50": results["bbox"]["AP50"],
        "results_dir": results_dir,
        **pictures,
    }
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    with open(os.path.join(cfg.OUTPUT_DIR, "quickstart_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    md = os.path.join(results_dir, "results.md")
    if os.path.isfile(md):
        print(open(md).read())
    print(f"[quickstart] {args.model}: mask AP {summary['segm_AP']:.1f}, box AP {summary['bbox_AP']:.1f} on "
          f"{test_name} after {cfg.SOLVER.MAX_ITER} iterations; {elapsed / 60:.1f} min in total")
    print(f"[quickstart] summary: {os.path.join(cfg.OUTPUT_DIR, 'quickstart_summary.json')}")
    print(f"[quickstart] pictures: {pictures['predictions_png']} (ground truth | predictions), "
          f"{pictures['loss_curve_png']}")
    return summary


if __name__ == "__main__":
    main()
