#!/usr/bin/env python
"""Write a small synthetic CarDD (CarDD_COCO + CarDD_SOD layouts) for tests, demos and smoke runs.

    python tools/make_synthetic_cardd.py --output datasets/synthetic --num-train 24 --num-val 8 --num-test 8
    export CARDD_DATASETS=datasets/synthetic      # then cardd_train / cardd_val / cardd_test point at it
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cardd_d2.data.synthetic import make_synthetic_cardd  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="folder to write (it will hold CarDD_COCO/ and CarDD_SOD/)")
    p.add_argument("--num-train", type=int, default=24)
    p.add_argument("--num-val", type=int, default=8)
    p.add_argument("--num-test", type=int, default=8)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=384)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--undamaged", type=int, default=0, help="number of damage-free images in <output>/undamaged")
    p.add_argument("--no-sod", action="store_true", help="do not write CarDD_SOD")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    info = make_synthetic_cardd(
        args.output,
        num_images=(args.num_train, args.num_val, args.num_test),
        image_size=(args.width, args.height),
        seed=args.seed,
        num_undamaged=args.undamaged,
        write_sod=not args.no_sod,
    )
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
