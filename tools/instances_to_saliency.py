#!/usr/bin/env python
"""Instance segmentation vs SOD (paper Fig. 10): turn detectron2 instance predictions into saliency maps.

  python tools/instances_to_saliency.py --gt-json instances_test2017.json --image-dir test2017 \
      --instances DCN=out_dcn/inference/coco_instances_results.json \
      --instances DCN+=out_dcnp/inference/coco_instances_results.json \
      [--saliency SGL-KRN=output/sod/sgl_krn/predictions/CarDD-TE] [--gt-mask-dir CarDD_SOD/CarDD-TE/CarDD-TE-Mask] \
      --output output/inst_vs_sod

Per image: union of the instance masks with score > 0.5 (``--score-thresh``) -> 0/255 PNG; all methods are scored
with the SOD metrics (comparison.json / comparison.md) and drawn side by side (comparison_grid.png).

Exit codes: 0 ok, 1 error (a result names an unknown image id, missing maps; the message names it), 2 usage error.
"""
import argparse

from cardd_sod.cli_args import name_path
from cardd_sod.compare import compare_methods


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt-json", required=True, help="GT COCO json (file names, sizes, GT masks)")
    ap.add_argument("--image-dir", required=True, help="images of --gt-json (for the grid)")
    ap.add_argument("--instances", action="append", type=name_path, default=[], metavar="NAME=JSON",
                    help="coco_instances_results.json of a method, repeatable")
    ap.add_argument("--saliency", action="append", type=name_path, default=[], metavar="NAME=DIR",
                    help="folder of SOD maps of a method, repeatable")
    ap.add_argument("--gt-mask-dir", default=None, help="GT SOD masks (default: derived from --gt-json)")
    ap.add_argument("--score-thresh", type=float, default=0.5)
    ap.add_argument("--grid-rows", type=int, default=8)
    ap.add_argument("--output", required=True, metavar="DIR")
    args = ap.parse_args(argv)
    res = compare_methods(args.gt_json, args.image_dir, args.output, dict(args.instances), dict(args.saliency),
                          args.gt_mask_dir, args.score_thresh, args.grid_rows)
    print(res["table"])
    print("grid:", res["grid"])
    return res


if __name__ == "__main__":
    main()
