#!/usr/bin/env python
"""The paper's more challenging setting (Section V-G, Table VI): damaged test set + undamaged images, classifier gate.

    python tools/challenging_setting.py --config-file configs/CarDD/dcn_plus_R_101_FPN.yaml --weights model.pth \
        --classifier-weights out/cls/model_final.pth \
        --test-json CarDD_COCO/annotations/instances_test2017.json --image-root CarDD_COCO/test2017 \
        --undamaged-dir undamaged_test/ --max-undamaged 500 --output out/table_vi [KEY VALUE ...]

Writes OUTPUT/extended_test.json, OUTPUT/challenging_results.json, OUTPUT/table_vi.md (and each evaluator's
results under OUTPUT/{gated,ungated,damaged_only}/) and prints the table. The checkpoint's class names must be the
test json's (an error names both otherwise).
"""
import argparse
import logging
import os
import sys

from cardd_cli import UsageError, parse_class_names


EXIT_CODES = """exit status:
  0  the table was written
  2  usage error: bad arguments or config, no --weights / MODEL.WEIGHTS, a missing or unreadable weights file,
     class names that disagree with the model or with the test json"""


def get_parser():
    p = argparse.ArgumentParser(description="CarDD more challenging setting (Table VI)", epilog=EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="detector checkpoint (sets MODEL.WEIGHTS); required, here or in the config")
    p.add_argument("--class-names", default=None, metavar="A,B,...",
                   help="comma-separated class names in class-id order (sets MODEL.CLASS_NAMES)")
    p.add_argument("--classifier-weights", default=None, help="classifier checkpoint (MODEL.DAMAGE_GATE.WEIGHTS)")
    p.add_argument("--discard-threshold", type=float, default=None, help="default MODEL.DAMAGE_GATE.DISCARD_THRESHOLD")
    p.add_argument("--test-json", required=True)
    p.add_argument("--image-root", required=True)
    p.add_argument("--undamaged-dir", required=True)
    p.add_argument("--max-undamaged", type=int, default=None, help="paper: 500")
    p.add_argument("--output", default="output/challenging", metavar="DIR")
    p.add_argument("--no-compare", action="store_true", help="only the gated row (one detector pass on kept images)")
    p.add_argument("--count-score-threshold", type=float, default=0.0,
                   help="score from which a detection on an undamaged image is counted")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config overrides")
    return p


def main(argv=None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    try:
        class_names = parse_class_names(args.class_names)
    except UsageError as e:
        parser.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from detectron2.data import MetadataCatalog

    from cardd_d2.assessment.challenging import build_extended_test_set, register_coco_dataset, run_challenging_setting
    from cardd_d2.assessment.gate import DamageGate
    from cardd_d2.assessment.predictor import build_predictor, setup_cfg
    from cardd_d2.checkpoint.class_names import check_same_names

    try:
        cfg = setup_cfg(args.config_file, weights=args.weights, opts=args.opts, device=args.device,
                        classifier_weights=args.classifier_weights, discard_threshold=args.discard_threshold,
                        class_names=class_names)
        dmg_name = register_coco_dataset("cardd_challenging_damaged", args.test_json, args.image_root)
        check_same_names(cfg.MODEL.CLASS_NAMES, f"the model ({cfg.MODEL.WEIGHTS})",
                         MetadataCatalog.get(dmg_name).thing_classes, args.test_json)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"challenging_setting: error: {e}", file=sys.stderr)
        return 2
    gate = DamageGate.from_config(cfg)
    if gate is None:
        print("warning: no classifier weights (--classifier-weights / MODEL.DAMAGE_GATE.WEIGHTS): running without "
              "the gate", file=sys.stderr)
    os.makedirs(args.output, exist_ok=True)
    ext = build_extended_test_set(args.test_json, args.image_root, args.undamaged_dir,
                                  os.path.join(args.output, "extended_test.json"), args.max_undamaged)
    print(f"extended test set: {ext['num_damaged']} damaged + {ext['num_undamaged']} undamaged -> {ext['json']}")
    ext_name = register_coco_dataset("cardd_challenging_extended", ext["json"], args.image_root)
    tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
    res = run_challenging_setting(build_predictor(cfg), gate, ext_name, damaged_dataset=dmg_name,
                                  output_dir=args.output, tasks=tasks, compare=not args.no_compare,
                                  count_score_threshold=args.count_score_threshold, progress=not args.no_progress)
    c = res["counts"]
    print(f"undamaged images discarded: {c['undamaged_discarded']} / {c['num_undamaged']}; kept undamaged images "
          f"with detections: {c['undamaged_kept_with_detections']}; damaged images discarded: "
          f"{c['damaged_discarded']}")
    with open(os.path.join(args.output, "table_vi.md"), encoding="utf-8") as f:
        print(f.read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
