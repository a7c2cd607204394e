#!/usr/bin/env python
"""Build the DUTS-style CarDD SOD layout from COCO instance annotations.

  python tools/coco_to_sod.py --json instances_test2017.json --image-dir test2017 --split TE --output CarDD_SOD
  python tools/coco_to_sod.py --coco-root CarDD_COCO --output CarDD_SOD                 (all three splits)
  python tools/coco_to_sod.py --coco-root CarDD_COCO --output CarDD_SOD_classwise --classwise
  python tools/coco_to_sod.py ... --category dent                                         (one class only)

Exit codes: 0 ok, 1 error (missing json / image, bad annotation; the message names the file and id),
2 usage error.
"""
import argparse
import json

from cardd_sod.data import coco_root_to_sod, coco_to_sod, coco_to_sod_classwise


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--json", help="COCO instances json of one split")
    src.add_argument("--coco-root", help="CarDD_COCO folder (annotations/instances_*2017.json + *2017/)")
    ap.add_argument("--image-dir", help="image folder of --json")
    ap.add_argument("--split", default="TR", help="TR | VAL | TE (or train/val/test) for --json")
    ap.add_argument("--splits", nargs="+", default=["TR", "VAL", "TE"], help="splits for --coco-root")
    ap.add_argument("--output", required=True, metavar="DIR", help="output SOD root")
    ap.add_argument("--classwise", action="store_true", help="one layout per class under OUT/<class>/")
    ap.add_argument("--category", help="only this class (id or name)")
    ap.add_argument("--keep-empty", choices=["auto", "yes", "no"], default="auto",
                    help="keep images with empty masks (auto: yes for the union, no for class-wise)")
    ap.add_argument("--no-edges", action="store_true", help="do not write CarDD-XX-Edge maps")
    ap.add_argument("--image-mode", default="copy", choices=["copy", "symlink", "hardlink"])
    args = ap.parse_args(argv)
    kw = {"write_edges": not args.no_edges, "image_mode": args.image_mode}
    keep = {"auto": None, "yes": True, "no": False}[args.keep_empty]
    if args.classwise:
        kw["keep_empty"] = bool(keep)
    else:
        kw["keep_empty"] = keep
        if args.category is not None:
            kw["category"] = int(args.category) if args.category.isdigit() else args.category
    if args.json:
        if not args.image_dir:
            ap.error("--json needs --image-dir")
        fn = coco_to_sod_classwise if args.classwise else coco_to_sod
        res = fn(args.json, args.image_dir, args.output, args.split, **kw)
    else:
        res = coco_root_to_sod(args.coco_root, args.output, args.splits, classwise=args.classwise, **kw)
    print(json.dumps(res, indent=1, default=str)[:4000])
    return res


if __name__ == "__main__":
    main()
