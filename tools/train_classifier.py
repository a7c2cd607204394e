#!/usr/bin/env python
"""Train / evaluate the damaged-vs-undamaged classifier (CarDD paper, Section IV).

    # folders with damaged/ and undamaged/ subfolders
    python tools/train_classifier.py --train data/cls/train --test data/cls/test --pretrained imagenet --output out/cls
    # COCO-derived: images with annotations = damaged, plus a folder of undamaged images
    python tools/train_classifier.py --train-coco instances_train2017.json train2017/ undamaged_train/ \
        --test-coco instances_test2017.json test2017/ undamaged_test/ --output out/cls
    # evaluation only
    python tools/train_classifier.py --eval-only --checkpoint out/cls/model_final.pth --test data/cls/test

Defaults follow the paper: VGG16, all layers fine-tuned, cross-entropy, lr 0.001, batch 16, 10 epochs (SGD momentum
0.9). ``--pretrained imagenet`` uses torchvision's ImageNet weights from its cache (never downloaded here); the default
is random init. Writes last.pth (every epoch; --resume continues from it), model_final.pth, metrics.json and
confusion_matrix.png, and prints accuracy, precision, recall and the FP/FN shares of the test set beside the paper's.
"""
import argparse
import json
import logging
import os
import sys


EXIT_CODES = """exit status:
  0  trained and/or evaluated; metrics written
  2  usage error: bad arguments, no training or test data given, a missing or unreadable checkpoint"""


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", metavar="DIR", help="folder with damaged/ and undamaged/")
    p.add_argument("--test", metavar="DIR", help="folder with damaged/ and undamaged/")
    p.add_argument("--train-coco", nargs=3, metavar=("JSON", "IMAGE_ROOT", "UNDAMAGED_DIR"))
    p.add_argument("--test-coco", nargs=3, metavar=("JSON", "IMAGE_ROOT", "UNDAMAGED_DIR"))
    p.add_argument("--arch", default="vgg16", help="vgg16 (paper), vgg16_bn, vgg11, or tiny (tests only)")
    p.add_argument("--pretrained", default="", metavar="imagenet|FILE",
                   help="ImageNet initialisation: 'imagenet' (torchvision's cache) or a torchvision VGG .pth; "
                        "default: random init")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--no-hflip", action="store_true", help="disable random horizontal flips in training")
    p.add_argument("--max-iters-per-epoch", type=int, default=None, help="(smoke tests)")
    p.add_argument("--output", default="output/classifier", metavar="DIR")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.pth")
    p.add_argument("--eval-only", action="store_true")
    p.add_argument("--checkpoint", default=None, help="checkpoint to evaluate with --eval-only")
    p.add_argument("--device", default=None)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p


def _items(folder, coco):
    from cardd_d2.assessment.classifier import coco_items, folder_items

    if folder:
        return folder_items(folder)
    if coco:
        return coco_items(*coco)
    return None


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    from cardd_d2.assessment import classifier as C

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    os.makedirs(args.output, exist_ok=True)
    test_items = _items(args.test, args.test_coco)
    test_set = (C.BinaryDamageDataset(test_items, C.build_transform(args.input_size), check_images=True)
                if test_items else None)
    if args.eval_only:
        if not args.checkpoint or test_set is None:
            print("--eval-only needs --checkpoint and --test/--test-coco", file=sys.stderr)
            return 2
        try:
            model, ckpt = C.load_classifier_checkpoint(args.checkpoint, device=device)
        except (FileNotFoundError, ValueError) as e:
            print(f"train_classifier: error: {e}", file=sys.stderr)
            return 2
        if ckpt.get("input_size", args.input_size) != args.input_size:
            test_set.transform = C.build_transform(ckpt["input_size"])
    else:
        train_items = _items(args.train, args.train_coco)
        if not train_items:
            print("give --train DIR or --train-coco JSON IMAGE_ROOT UNDAMAGED_DIR", file=sys.stderr)
            return 2
        train_set = C.BinaryDamageDataset(
            train_items, C.build_transform(args.input_size, train=True, hflip=not args.no_hflip), check_images=True)
        labels = train_set.labels()
        print(f"train: {int((labels == 1).sum())} damaged + {int((labels == 0).sum())} undamaged images"
              + (f", {len(train_set.skipped)} unreadable skipped" if train_set.skipped else ""))
        try:
            model, history = C.train_classifier(
                train_set, args.output, arch=args.arch, pretrained=args.pretrained or None, input_size=args.input_size,
                epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                weight_decay=args.weight_decay, resume=args.resume, device=device, num_workers=args.num_workers,
                seed=args.seed, progress=not args.no_progress, max_iters_per_epoch=args.max_iters_per_epoch)
        except (FileNotFoundError, ValueError) as e:  # pretrained weights missing or not ImageNet VGG weights
            print(f"train_classifier: error: {e}", file=sys.stderr)
            return 2
    if test_set is None:
        return 0
    m = C.evaluate_classifier(model, test_set, batch_size=args.batch_size, device=device,
                              num_workers=args.num_workers, progress=not args.no_progress)
    print(C.format_metrics(m))
    with open(os.path.join(args.output, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(m, f, indent=1)
    png = C.save_confusion_png(m["confusion"], os.path.join(args.output, "confusion_matrix.png"))
    print(f"confusion matrix -> {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
