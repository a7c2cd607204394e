#!/usr/bin/env python
"""Write a small synthetic damage dataset for tests, demos and smoke runs.

CarDD's release layout (CarDD_COCO + CarDD_SOD, CarDD's six classes, ids from 1):

    python tools/make_synthetic_cardd.py --output datasets/synthetic --num-train 24 --num-val 8 --num-test 8
    export CARDD_DATASETS=datasets/synthetic      # then cardd_train / cardd_val / cardd_test point at it

Your own classes in a plain COCO layout (annotations/{train,val,test}.json, images/{train,val,test}/), ids from
--first-id (default 0, as many annotation tools export them); class k is drawn like CarDD's k-th class:

    python tools/make_synthetic_cardd.py --output datasets/parts --class-names dent scrape crack window light tyre

Exit codes: 0 ok, 2 usage error.
"""
import argparse

from cardd_d2.data.synthetic import make_synthetic_cardd, make_synthetic_coco


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="folder to write")
    p.add_argument("--num-train", type=int, default=24)
    p.add_argument("--num-val", type=int, default=8)
    p.add_argument("--num-test", type=int, default=8)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=384)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--undamaged", type=int, default=0, help="number of damage-free images in <output>/undamaged")
    p.add_argument("--no-sod", action="store_true", help="do not write CarDD_SOD")
    p.add_argument("--class-names", nargs="+", default=None, metavar="NAME",
                   help="1-6 class names of your own: write a plain COCO layout instead of CarDD's")
    p.add_argument("--first-id", type=int, default=0,
                   help="with --class-names: first image / annotation / category id (default 0)")
    args = p.parse_args(argv)
    if args.class_names is None and args.first_id != 0:
        p.error("--first-id needs --class-names (CarDD's layout numbers from 1)")
    if args.class_names is not None and (args.undamaged or args.no_sod):
        p.error("--undamaged / --no-sod belong to CarDD's layout, not to --class-names")
    return args


def main(argv=None):
    args = parse_args(argv)
    counts, size = (args.num_train, args.num_val, args.num_test), (args.width, args.height)
    if args.class_names is not None:
        info = make_synthetic_coco(args.output, args.class_names, counts, size, args.seed, args.first_id)
        for split in ("train", "val", "test"):
            print(f"{split}: {info['json'][split]} ({info['num_annotations'][split]} instances), "
                  f"images in {info['image_dirs'][split]}")
        print(f"classes: {', '.join(info['class_names'])}")
        return info
    info = make_synthetic_cardd(args.output, num_images=counts, image_size=size, seed=args.seed,
                                num_undamaged=args.undamaged, write_sod=not args.no_sod)
    print(f"COCO layout: {info['coco_root']}")
    for split in ("train", "val", "test"):
        print(f"  {split}: {info['json'][split]} ({info['num_annotations'][split]} instances)")
    if info["sod_root"]:
        print(f"SOD layout:  {info['sod_root']}")
    if info["undamaged_dir"]:
        print(f"undamaged:   {info['undamaged_dir']}")
    print(f"use it with: export CARDD_DATASETS={info['root']}")
    return info


if __name__ == "__main__":
    main()
