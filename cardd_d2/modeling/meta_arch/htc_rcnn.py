"""``HTCRCNN``: the meta-architecture of HTC with its semantic branch (it hands the stuff maps to the ROI heads)."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import ImageList

from ..roi_heads.htc_semantic import NO_STUFF_MAPS_HINT

__all__ = ["HTCRCNN", "ImageListWithSemSeg"]


class ImageListWithSemSeg(ImageList):
    """The padded image batch plus the stuff maps padded to the same size (``sem_seg`` [N, H, W], long)."""

    def __init__(self, tensor: torch.Tensor, image_sizes: List[Tuple[int, int]], sem_seg: torch.Tensor):
        super().__init__(tensor, image_sizes)
        self.sem_seg = sem_seg


@META_ARCH_REGISTRY.register()
class HTCRCNN(GeneralizedRCNN):
    """GeneralizedRCNN that, in training with ``MODEL.HTC.WITH_SEMANTIC``, batches each input's ``"sem_seg"`` stuff
    map (padded like the image, with the ignore value) and hands it to the ROI heads with the images
    (:class:`ImageListWithSemSeg`). Without the semantic branch it behaves exactly like GeneralizedRCNN.
    """

    @configurable
    def __init__(self, *, train_datasets: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        self.train_datasets = tuple(train_datasets)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["train_datasets"] = tuple(cfg.DATASETS.TRAIN)
        return ret

    @property
    def with_semantic(self) -> bool:
        return bool(getattr(self.roi_heads, "with_semantic", False))

    def preprocess_image(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        images = super().preprocess_image(batched_inputs)
        if not (self.training and self.with_semantic):
            return images
        return ImageListWithSemSeg(images.tensor, images.image_sizes, self.batch_stuff_maps(batched_inputs, images))

    def batch_stuff_maps(self, batched_inputs: List[Dict[str, torch.Tensor]], images: ImageList) -> torch.Tensor:
        """Stack the inputs' ``sem_seg`` maps, padded with the ignore value to ``images.tensor``'s size."""
        ignore = self.roi_heads.semantic_head.ignore_value
        maps = []
        for i, x in enumerate(batched_inputs):
            name = x.get("file_name", f"batch item {i}")
            if "sem_seg" not in x:
                raise ValueError(
                    f"MODEL.HTC.WITH_SEMANTIC is on but the training input {name} has no 'sem_seg' stuff map: the "
                    f"dataset {list(self.train_datasets) or '(DATASETS.TRAIN)'} has no stuff maps "
                    f"('sem_seg_file_name'; CarDD has none). {NO_STUFF_MAPS_HINT}"
                )
            seg = x["sem_seg"]
            if seg.dim() != 2 or tuple(seg.shape) != tuple(x["image"].shape[-2:]):
                raise ValueError(
                    f"{name}: 'sem_seg' has shape {tuple(seg.shape)} but the image is "
                    f"{tuple(x['image'].shape[-2:])}; the stuff map must be [H, W] at the image size"
                )
            maps.append(self._move_to_current_device(seg).long())
        padded = ImageList.from_tensors(
            maps,
            self.backbone.size_divisibility,
            pad_value=float(ignore),
            padding_constraints=self.backbone.padding_constraints,
        ).tensor
        if padded.shape[-2:] != images.tensor.shape[-2:]:  # pragma: no cover - same sizes, same padding
            raise RuntimeError(
                f"padded stuff maps {tuple(padded.shape)} do not match images {tuple(images.tensor.shape)}"
            )
        return padded
