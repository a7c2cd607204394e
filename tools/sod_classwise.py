#!/usr/bin/env python
"""Class-wise SOD experiments (paper Table IX): six class-wise datasets, train + test one model on each.

  python tools/sod_classwise.py --model sgl_krn --coco-root datasets/CarDD_COCO --output output/sod_classwise
  python tools/sod_classwise.py --model u2netp --train-json tr.json --train-images tr/ --test-json te.json \
      --test-images te/ --output out [KEY VALUE ...overrides, e.g. SOLVER.EPOCHS 1]

--output receives the class-wise datasets (data/), one training run per class (runs/<class>/) and
classwise_results.{json,md}.  --config-file defaults to configs/SOD/<model>.yaml.

Exit codes: 0 ok, 1 error (missing annotations or images; the message names the file), 2 usage error.
"""
import argparse
import os

from cardd_sod.classwise import TRAIN_SETS, run_classwise
from cardd_sod.data import cardd_coco_sources, layout


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="csnet | poolnet | u2net | u2netp | sgl_krn")
    ap.add_argument("--config-file", default=None, metavar="FILE", help="default configs/SOD/<model>.yaml")
    ap.add_argument("--coco-root", help="CarDD_COCO folder (or a CarDD root holding CarDD_COCO)")
    ap.add_argument("--train-json")
    ap.add_argument("--train-images")
    ap.add_argument("--test-json")
    ap.add_argument("--test-images")
    ap.add_argument("--classes", nargs="+", default=None, help="subset of classes (names or ids)")
    ap.add_argument("--train-set", choices=TRAIN_SETS, default="all",
                    help="all: every training image, empty masks where the class is absent (default; what the "
                         "released generator writes); subset: only training images with the class. Test sets are "
                         "always the images with the class")
    ap.add_argument("--output", required=True, metavar="DIR", help="work folder (datasets, runs, results)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = ap.parse_args(argv)
    if args.coco_root:
        root = args.coco_root
        if os.path.isdir(os.path.join(root, layout.COCO_DIR)):
            root = os.path.join(root, layout.COCO_DIR)
        sources = cardd_coco_sources(root, ["TR", "TE"])
    else:
        if not all([args.train_json, args.train_images, args.test_json, args.test_images]):
            ap.error("give --coco-root or all of --train-json/--train-images/--test-json/--test-images")
        sources = {"TR": (args.train_json, args.train_images), "TE": (args.test_json, args.test_images)}
    classes = [int(c) if c.isdigit() else c for c in args.classes] if args.classes else None
    res = run_classwise(args.model, sources, args.output, args.config_file, args.opts, classes, args.train_set,
                        progress=not args.no_progress)
    print(res["table"])
    return res


if __name__ == "__main__":
    main()
