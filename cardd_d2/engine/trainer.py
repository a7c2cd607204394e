"""CarDDTrainer: detectron2's DefaultTrainer with CarDD's evaluator, augmentations, checkpoints and exact resume.

Evaluation results of dataset ``D`` are written to ``OUTPUT_DIR/inference/D/`` (results.json, results.md).
"""
import logging
import os
from contextlib import contextmanager

import detectron2.engine.defaults as d2_defaults
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.common import DatasetFromList
from detectron2.engine import DefaultTrainer
from detectron2.utils import comm

from cardd_d2.checkpoint.checkpointer import TrainingCheckpointer
from cardd_d2.data.mapper import CarDDDatasetMapper

from .exact_resume import (
    GlobalRNGState,
    PositionedDataset,
    PositionSeededMapper,
    ResumableTrainingSampler,
    preserved_global_rng,
)
from .hooks import ProgressBarHook

logger = logging.getLogger(__name__)


def inference_dir(cfg, dataset_name: str) -> str:
    return os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)


def training_class_names(cfg):
    """``thing_classes`` of the first training dataset (detectron2 checks that all training datasets agree)."""
    if not len(cfg.DATASETS.TRAIN):
        return None
    return MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes")


@contextmanager
def _cpu_aware_ddp():
    """While DefaultTrainer.__init__ wraps the model: CPU modules get DistributedDataParallel(device_ids=None).

    detectron2 always passes device_ids=[local_rank], which DistributedDataParallel rejects for CPU modules, so
    multi-process CPU (gloo) training fails. Only this trainer's construction sees the change.
    """
    d2_create = d2_defaults.create_ddp_model

    def create(model, **kwargs):
        if comm.get_world_size() > 1 and next(model.parameters()).device.type == "cpu":
            kwargs.setdefault("device_ids", None)
        return d2_create(model, **kwargs)

    d2_defaults.create_ddp_model = create
    try:
        yield
    finally:
        d2_defaults.create_ddp_model = d2_create


class CarDDTrainer(DefaultTrainer):
    def __init__(self, cfg):
        with _cpu_aware_ddp():
            super().__init__(cfg)
        self._sampler = getattr(self.data_loader, "cardd_sampler", None)
        if self._sampler is not None:
            self.checkpointer.add_checkpointable("train_sampler", self._sampler)
        self.checkpointer.add_checkpointable("rng", GlobalRNGState())

    @property
    def data_loader(self):
        return self._trainer.data_loader

    @classmethod
    def build_train_loader(cls, cfg):
        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
            raise ValueError(
                f"DATALOADER.SAMPLER_TRAIN {cfg.DATALOADER.SAMPLER_TRAIN!r} is not supported by CarDDTrainer, whose "
                "resumable sampler shuffles like detectron2's 'TrainingSampler'; set DATALOADER.SAMPLER_TRAIN "
                "TrainingSampler"
            )
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=0,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
        logger.info("Training on %d images of %s; classes: %s", len(dataset), ", ".join(cfg.DATASETS.TRAIN),
                    training_class_names(cfg))
        rr = cfg.INPUT.RANGE_RESIZE
        if rr.ENABLED:
            logger.info("INPUT.RANGE_RESIZE is enabled: training images are resized to width %d and a random height "
                        "in %s (keep ratio: %s); INPUT.MIN_SIZE_TRAIN and INPUT.MAX_SIZE_TRAIN are ignored for "
                        "training", rr.WIDTH, tuple(rr.HEIGHT_RANGE), rr.KEEP_RATIO)
        grouping = cfg.DATALOADER.ASPECT_RATIO_GROUPING
        sampler = ResumableTrainingSampler(
            len(dataset), seed=cfg.SEED if cfg.SEED >= 0 else None,
            landscape=[d["width"] > d["height"] for d in dataset] if grouping else None,
        )
        loader = build_detection_train_loader(
            PositionedDataset(DatasetFromList(dataset, copy=False)),
            mapper=PositionSeededMapper(CarDDDatasetMapper(cfg, is_train=True), sampler),
            sampler=sampler,
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            aspect_ratio_grouping=grouping,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
            # the loader's own generator: creating its iterator must not draw from torch's global generator
            seed=sampler.seed,
        )
        loader.cardd_sampler = sampler
        return loader

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=CarDDDatasetMapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        from cardd_d2.evaluation import build_cardd_evaluator

        return build_cardd_evaluator(cfg, dataset_name, output_dir=output_folder or inference_dir(cfg, dataset_name))

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        # Evaluation during training must not move the generators training draws from (exact resume).
        with preserved_global_rng():
            return super().test(cfg, model, evaluators)

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        if self._sampler is not None and self.start_iter > 0:
            per_rank_batch = self.cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
            self._sampler.resume_after(self.start_iter, per_rank_batch, self.cfg.DATALOADER.NUM_WORKERS)
            logger.info(f"Resuming data order at sample {self._sampler.next_position} of this rank's stream")

    def build_hooks(self):
        # DefaultTrainer.__init__ made a plain DetectionCheckpointer just before calling this; the hooks built below
        # (periodic, final and best checkpoints) must save through the training checkpointer instead.
        old = self.checkpointer
        self.checkpointer = TrainingCheckpointer(
            old.model, old.save_dir, thing_classes=training_class_names(self.cfg), **old.checkpointables
        )
        hooks = super().build_hooks()
        hooks.append(ProgressBarHook(self.cfg.SOLVER.MAX_ITER))
        return hooks
