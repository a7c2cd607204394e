"""CarDDTrainer: detectron2's DefaultTrainer with CarDD's evaluator, augmentations and exact resume.

Evaluation results of dataset ``D`` are written to ``OUTPUT_DIR/inference/D/`` (results.json, results.md).
"""
import logging
import os

from detectron2.data import DatasetMapper, build_detection_train_loader, get_detection_dataset_dicts
import detectron2.engine.defaults as _d2_defaults
from detectron2.engine import DefaultTrainer
from detectron2.utils import comm

from .hooks import ProgressBarHook
from .resumable_sampler import ResumableTrainingSampler

logger = logging.getLogger(__name__)


_d2_create_ddp_model = _d2_defaults.create_ddp_model


def _create_ddp_model_cpu_aware(model, **kwargs):
    # detectron2 always passes device_ids=[local_rank], which DistributedDataParallel rejects for CPU modules;
    # CPU (gloo) multi-process training needs device_ids=None.
    if comm.get_world_size() > 1 and next(model.parameters()).device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    return _d2_create_ddp_model(model, **kwargs)


_d2_defaults.create_ddp_model = _create_ddp_model_cpu_aware


def inference_dir(cfg, dataset_name: str) -> str:
    return os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)


def build_train_augmentation(cfg):
    """CarDD's training augmentations (range resize for DCN+, else detectron2's default), see data.transforms."""
    try:
        from cardd_d2.data.transforms import build_cardd_train_augmentation
    except ImportError:  # transforms not available: detectron2's default resize + flip
        from detectron2.data.detection_utils import build_augmentation

        return build_augmentation(cfg, is_train=True)
    return build_cardd_train_augmentation(cfg)


class CarDDTrainer(DefaultTrainer):
    def __init__(self, cfg):
        super().__init__(cfg)
        self._sampler = getattr(self.data_loader, "cardd_sampler", None)
        if self._sampler is not None:
            self.checkpointer.add_checkpointable("train_sampler", self._sampler)

    @property
    def data_loader(self):
        return self._trainer.data_loader

    @classmethod
    def build_train_loader(cls, cfg):
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=0,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
        mapper_args = DatasetMapper.from_config(cfg, is_train=True)
        mapper_args["augmentations"] = build_train_augmentation(cfg)
        sampler = ResumableTrainingSampler(len(dataset), seed=cfg.SEED if cfg.SEED >= 0 else None)
        loader = build_detection_train_loader(cfg, dataset=dataset, mapper=DatasetMapper(**mapper_args),
                                              sampler=sampler)
        loader.cardd_sampler = sampler
        return loader

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        from cardd_d2.evaluation import build_cardd_evaluator

        return build_cardd_evaluator(cfg, dataset_name, output_dir=output_folder or inference_dir(cfg, dataset_name))

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        if self._sampler is not None and self.start_iter > 0:
            # Skip what this rank consumed before the interruption so the data order continues unchanged.
            per_rank_batch = self.cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
            self._sampler.start_index = self.start_iter * per_rank_batch
            logger.info(f"Resuming data order at sample {self._sampler.start_index} of this rank's stream")

    def build_hooks(self):
        hooks = super().build_hooks()
        hooks.append(ProgressBarHook(self.cfg.SOLVER.MAX_ITER))
        return hooks
