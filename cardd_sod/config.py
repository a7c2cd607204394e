"""Every config key of the SOD pipeline, with its default value (fvcore's CfgNode; no detectron2 import).

``get_sod_cfg()`` returns a fresh copy of the defaults; ``setup_sod_cfg(config_file, opts)`` merges a YAML file
(``_BASE_`` chains resolve relative to the file) and trailing ``KEY VALUE`` overrides, as detectron2 tools do.
Unknown keys are errors.  ``MODEL.KWARGS`` is free-form (keyword arguments of the model's constructor).
Each section names the module that reads it.
"""
from __future__ import annotations

from typing import Iterable, Optional

from fvcore.common.config import CfgNode as _CfgNode

from .models.backbone_weights import MSRA_R50

__all__ = ["CfgNode", "get_sod_cfg", "setup_sod_cfg"]


class CfgNode(_CfgNode):
    def merge_from_list(self, cfg_list: list):
        """KEY VALUE pairs; keys under MODEL.KWARGS may be new (the model constructor checks them)."""
        if len(cfg_list) % 2:
            raise ValueError(f"config overrides must be KEY VALUE pairs, got an odd list: {cfg_list}")
        prefix = "MODEL.KWARGS."
        for key in cfg_list[0::2]:
            sub = key[len(prefix):] if key.startswith(prefix) else ""
            if sub and "." not in sub:
                if sub not in self.MODEL.KWARGS:
                    self.MODEL.KWARGS[sub] = None  # None takes any value type when the override is merged
                continue
            node = self
            for part in key.split("."):
                if not isinstance(node, dict) or part not in node:
                    raise KeyError(f"unknown config key {key!r}")
                node = node[part]
        return super().merge_from_list(cfg_list)


_C = CfgNode()

# ---------------------------------------------------------------- model (cardd_sod.models, engine/trainer.py)
_C.MODEL = CfgNode()
_C.MODEL.NAME = "csnet"          # a registered SOD model: csnet | poolnet | u2net | u2netp | sgl_krn
_C.MODEL.KWARGS = CfgNode(new_allowed=True)  # keyword arguments of the model's constructor
_C.MODEL.WEIGHTS = ""            # state_dict / trainer checkpoint to start from
# ImageNet caffe ResNet-50 of PoolNet / SGL-KRN (the released training always loads one): the MSRA weights (URL,
# downloaded once and cached) or a local .pkl / PoolNet resnet50_caffe.pth; "" = random init (warns).  Not read
# when MODEL.WEIGHTS gives the whole model.
_C.MODEL.BACKBONE_WEIGHTS = MSRA_R50
_C.MODEL.DEVICE = "auto"         # auto | cpu | cuda | cuda:N

# ---------------------------------------------------------------- data (cardd_sod.data)
_C.DATA = CfgNode()
_C.DATA.ROOT = "datasets/CarDD_SOD"  # CarDD_SOD layout (cardd_sod.data.layout)
_C.DATA.TRAIN_SPLIT = "TR"
_C.DATA.TEST_SPLIT = "TE"
_C.DATA.NUM_WORKERS = 2
_C.DATA.MAX_TRAIN_IMAGES = 0     # 0 = all (tiny runs use a few)
_C.DATA.MAX_TEST_IMAGES = 0
_C.DATA.STRICT_MASKS = False     # True: non-binary masks are an error instead of warn + binarise (> 128)

# ---------------------------------------------------------------- input (the model spec's preprocessing)
_C.INPUT = CfgNode()
_C.INPUT.PRESET = ""             # "" = the model's own preprocessing; else a registered model whose to use
_C.INPUT.SIZE = None             # [H, W] resize, or None for the preset's
_C.INPUT.CROP = None             # U2-Net style random crop size [H, W], or None for the preset's
_C.INPUT.MAX_SIZE = 0            # > 0: cap the longer side at full resolution (PoolNet / SGL-KRN); 0 = off

# ---------------------------------------------------------------- solver (engine/trainer.py)
_C.SOLVER = CfgNode()
_C.SOLVER.OPTIMIZER = "adam"     # the only one the paper uses (Table VII)
_C.SOLVER.BASE_LR = 1e-4
_C.SOLVER.BETAS = (0.9, 0.999)
_C.SOLVER.EPS = 1e-8
_C.SOLVER.WEIGHT_DECAY = 0.0
_C.SOLVER.BATCH_SIZE = 1
_C.SOLVER.EPOCHS = 1
_C.SOLVER.LR_STEPS = ()          # epochs after which the lr is multiplied by GAMMA
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.RESET_OPTIMIZER_AT_STEPS = False  # re-create Adam at each lr drop (PoolNet / SGL-KRN release)
# drop gradients still accumulating at an epoch start; the accumulation count goes on (PoolNet / SGL-KRN release)
_C.SOLVER.DISCARD_PENDING_GRADS = False
_C.SOLVER.ITER_SIZE = 0          # gradient accumulation: optimizer step every ITER_SIZE batches; 0 = the model spec's
_C.SOLVER.MAX_ITER = 0           # > 0: stop after this many optimizer steps (U2-Net release: 137,280)
_C.SOLVER.CLIP_GRAD_NORM = 0.0
_C.SOLVER.AMP = ""               # "" (fp32, as the paper) | "bf16" | "fp16" (fp16 uses a GradScaler; CUDA only)
_C.SOLVER.CHECKPOINT_PERIOD = 1  # epochs
_C.SOLVER.LOG_PERIOD = 20        # iterations between TensorBoard scalars

# ---------------------------------------------------------------- test (engine/trainer.py evaluate)
_C.TEST = CfgNode()
_C.TEST.EVAL_AT_END = True
_C.TEST.BATCH_SIZE = 1
_C.TEST.SAVE_PREDICTIONS = True

_C.SEED = 0
_C.OUTPUT_DIR = "output/sod"


def get_sod_cfg() -> CfgNode:
    """A fresh copy of the SOD defaults."""
    return _C.clone()


def setup_sod_cfg(config_file: Optional[str] = None, opts: Iterable[str] = (), freeze: bool = False) -> CfgNode:
    """Defaults <- ``config_file`` (with its ``_BASE_`` chain) <- ``opts`` (KEY VALUE ...)."""
    cfg = get_sod_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if freeze:
        cfg.freeze()
    return cfg
