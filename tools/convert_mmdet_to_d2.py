#!/usr/bin/env python
"""Convert an mmdetection 2.x checkpoint (Mask R-CNN, Cascade Mask R-CNN, HTC; R-50/R-101 FPN, DCN, DCNv2, GCNet)
to detectron2.

    python tools/convert_mmdet_to_d2.py mask_rcnn_r101_fpn_dconv_c3-c5_1x_coco.pth out/mmdet_dcn_r101.pth \\
        --num-classes 6 --drop-heads

The output loads with DetectionCheckpointer key-for-key. The tool prints the config overrides the model needs
(pytorch-style ResNet: MODEL.RESNETS.STRIDE_IN_1X1 False; RGB input with mmdet's mean/std; detected depth, DCN and
GC stages; classes). Box coding needs nothing: mmdet's target stds (0.1, 0.1, 0.2, 0.2) are detectron2's default
ROI_BOX_HEAD.BBOX_REG_WEIGHTS (10, 10, 5, 5), the RPN's (1, 1, 1, 1) its default RPN.BBOX_REG_WEIGHTS, and mmdet
2.x decodes boxes without the legacy "+1", like detectron2. The background class is the last classifier column
in both. See cardd_d2/checkpoint/ (mmdet_rules.py, mmdet_heads.py) for the full mapping.

--num-classes N checks the checkpoint's class count; COCO weights (80 classes) for CarDD (6) need --drop-heads,
which drops the class-specific predictors (box classifier, box regressor, mask logits) so they train from scratch.
"""
import argparse
import json
import sys

from cardd_d2.checkpoint import HEAD_FAMILIES, MmdetConversionError, convert_mmdet_checkpoint


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes: 0 converted; 2 bad arguments, or a checkpoint that cannot be converted as asked "
               "(the message names the file and the problem)",
    )
    p.add_argument("src", help="mmdetection .pth checkpoint (with 'state_dict' or a raw state dict)")
    p.add_argument("dst", help="output detectron2 .pth")
    p.add_argument("--num-classes", type=int, default=None, help="classes of the target config (CarDD: 6)")
    p.add_argument("--drop-heads", action="store_true", help="drop class-specific predictor layers")
    p.add_argument("--heads", default=None, choices=list(HEAD_FAMILIES),
                   help="ROI-head family of the checkpoint (default: detected from its keys)")
    p.add_argument("--ignore", action="append", default=[], metavar="REGEX", help="mmdet keys to drop knowingly")
    p.add_argument("--deform-modulated", choices=["auto", "true", "false"], default="auto",
                   help="only needed when the offset width is ambiguous (e.g. 54 channels)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow full unpickling of the source file (only for files you trust)")
    p.add_argument("--json", action="store_true", help="print the result summary as JSON")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    modulated = {"auto": None, "true": True, "false": False}[args.deform_modulated]
    try:
        result = convert_mmdet_checkpoint(
            args.src,
            args.dst,
            trust_pickle=args.trust_pickle,
            num_classes=args.num_classes,
            drop_heads=args.drop_heads,
            heads=args.heads,
            ignore=args.ignore,
            deform_modulated=modulated,
        )
    except MmdetConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {
        "dst": args.dst,
        "converted_tensors": len(result.model),
        "dropped": result.dropped,
        "info": result.info,
        "overrides": result.overrides_as_opts(),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {args.dst}: {len(result.model)} tensors" + (f", dropped {len(result.dropped)}" if result.dropped else ""))
        print("config overrides for these weights (KEY: VALUE):")
        for k, v in result.overrides:
            print(f"  {k}: {json.dumps(v) if not isinstance(v, str) else v}")
        print("as command-line opts:")
        print("  " + " ".join(f"'{o}'" if " " in o else o for o in summary["overrides"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
