#!/usr/bin/env python
"""Dataset statistics like the CarDD paper's Fig. 5: per-class counts, size buckets, object sizes, resolutions.

    python tools/dataset_stats.py --dataset cardd_train --output output/stats          # $CARDD_DATASETS layout
    python tools/dataset_stats.py --dataset cardd_train cardd_val --cardd-root datasets --output output/stats
    python tools/dataset_stats.py --json path/to/instances.json --output output/stats   # any COCO json

Writes <name>_stats.json and <name>_{class_counts,size_buckets,object_sizes,image_resolution}.png per dataset.
<name> is the dataset name, or the json's base name; json files that share a base name are told apart by their
parent folders (a/train/instances.json and b/train/instances.json -> a_train_instances, b_train_instances).

Exit codes: 0 ok, 1 some inputs failed (missing json, unknown dataset), 2 usage error.
"""
import argparse
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", nargs="+", help="registered dataset name(s), e.g. cardd_train cardd_val")
    src.add_argument("--json", nargs="+", help="COCO instances json file(s)")
    p.add_argument("--cardd-root", default=None,
                   help="folder holding CarDD_COCO for the cardd_* names (default: $CARDD_DATASETS, else datasets)")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--bin-width", type=float, default=16.0, help="histogram bin width of sqrt(area), pixels")
    p.add_argument("--no-plots", action="store_true", help="only write the JSON")
    return p.parse_args(argv)


def output_names(json_files):
    """One output name per json: the base name without .json, with as many parent folders (joined by "_") as it
    takes to make the names distinct. The same file given twice is an error."""
    paths = [os.path.abspath(j) for j in json_files]
    twice = sorted({p for p in paths if paths.count(p) > 1})
    if twice:
        print(f"error: json file given more than once: {', '.join(twice)}", file=sys.stderr)
        raise SystemExit(2)
    parts = [os.path.splitext(p)[0].strip(os.sep).split(os.sep) for p in paths]
    depth = 1
    while True:
        names = ["_".join(x[-depth:]) for x in parts]
        if len(set(names)) == len(names):
            return names
        depth += 1


def main(argv=None):
    args = parse_args(argv)
    from cardd_sod.data.layout import DATASET_NAMES

    from cardd_d2.data import register_cardd
    from cardd_d2.data.stats import dataset_stats, write_dataset_stats

    results = {}
    if args.dataset:
        from detectron2.data import DatasetCatalog

        cardd = set(DATASET_NAMES.values())
        if any(n in cardd and (args.cardd_root or n not in DatasetCatalog.list()) for n in args.dataset):
            register_cardd(args.cardd_root, check_images=False)
        sources = [(n, n) for n in dict.fromkeys(args.dataset)]
    else:
        sources = list(zip(output_names(args.json), args.json))
    for name, src in sources:
        if args.json and not os.path.isfile(src):
            print(f"error: json file not found: {src}", file=sys.stderr)
            raise SystemExit(1)
        try:
            stats = dataset_stats(src, bin_width=args.bin_width)
        except KeyError as e:
            print(f"error: {e.args[0]}", file=sys.stderr)
            raise SystemExit(1)
        paths = write_dataset_stats(stats, args.output, prefix=f"{name}_", plots=not args.no_plots)
        results[name] = paths
        print(f"{name}: {stats['num_images']} images, {stats['num_instances']} instances; "
              f"per class {dict(stats['instances_per_class'])}")
        print(f"  size buckets: { {b: v['count'] for b, v in stats['size_buckets']['all'].items()} }")
        for kind, path in paths.items():
            print(f"  {kind}: {path}")
    return results


if __name__ == "__main__":
    main()
