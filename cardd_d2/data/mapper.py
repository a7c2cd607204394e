"""CarDDDatasetMapper: detectron2's DatasetMapper with CarDD's resizes (cardd_d2.data.transforms) and, optionally,
mmdetection's mask targets.

``INPUT.RASTERIZE_BEFORE_RESIZE`` (with ``INPUT.MASK_FORMAT "bitmask"``) follows mmdetection's
``LoadAnnotations(poly2mask=True)``: every polygon annotation becomes a full-image bitmap at the original image size
(pycocotools, as mmdet's ``_poly2mask``) before the augmentations, so the bitmap is resized with the image's resize
backend (nearest) and flipped with it. The ROI mask heads then crop each ground-truth bitmap with RoIAlign
(aligned, sampling ratio 0) to the mask size and keep values >= 0.5 (``BitMasks.crop_and_resize``), which is
mmdetection's ``BitmapMasks.crop_and_resize`` mask target. Without it, detectron2 transforms the polygons and, with
``MASK_FORMAT "polygon"``, rasterises each one inside its proposal box.
"""
from __future__ import annotations

import pycocotools.mask as mask_util

from detectron2.config import configurable
from detectron2.data import DatasetMapper

from .transforms import build_cardd_test_augmentation, build_cardd_train_augmentation

__all__ = ["CarDDDatasetMapper"]


class CarDDDatasetMapper(DatasetMapper):
    @configurable
    def __init__(self, is_train: bool, *, rasterize_before_resize: bool = False, **kwargs):
        super().__init__(is_train, **kwargs)
        if rasterize_before_resize and self.instance_mask_format != "bitmask":
            raise ValueError(
                "INPUT.RASTERIZE_BEFORE_RESIZE True needs INPUT.MASK_FORMAT 'bitmask' (got "
                f"{self.instance_mask_format!r}): the rasterised masks are bitmaps"
            )
        self.rasterize_before_resize = rasterize_before_resize

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["augmentations"] = (build_cardd_train_augmentation if is_train else build_cardd_test_augmentation)(cfg)
        ret["rasterize_before_resize"] = cfg.INPUT.RASTERIZE_BEFORE_RESIZE
        return ret

    def __call__(self, dataset_dict):
        if self.is_train and self.rasterize_before_resize and "annotations" in dataset_dict:
            dataset_dict = dict(dataset_dict)
            h, w = dataset_dict["height"], dataset_dict["width"]  # the image's own size (checked by the parent)
            dataset_dict["annotations"] = [self._rasterize(a, h, w) for a in dataset_dict["annotations"]]
        return super().__call__(dataset_dict)

    @staticmethod
    def _rasterize(anno: dict, height: int, width: int) -> dict:
        segm = anno.get("segmentation")
        if not isinstance(segm, list):  # RLE dicts and bitmaps are full-image masks already
            return anno
        # A full-image RLE (what detectron2's polygons_to_bitmask decodes); detectron2 transforms RLEs as bitmaps.
        return dict(anno, segmentation=mask_util.merge(mask_util.frPyObjects(segm, height, width)))
