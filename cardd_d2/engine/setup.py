"""Config and dataset set-up shared by the command-line tools."""
import logging
import os

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog

from cardd_d2.config import add_cardd_config

logger = logging.getLogger(__name__)

CARDD_SPLITS = ("cardd_train", "cardd_val", "cardd_test")


def register_datasets_for_cfg(cfg, cardd_root=None):
    """Registers CarDD's splits when the config uses them and they are not registered yet.

    The root is ``cardd_root`` or ``$CARDD_DATASETS`` (the folder that holds ``CarDD_COCO``).
    """
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    if any(n in CARDD_SPLITS and n not in DatasetCatalog.list() for n in names) or cardd_root:
        from cardd_d2.data import register_cardd_from_cfg

        register_cardd_from_cfg(cfg, cardd_root)


def setup_cfg(config_file=None, opts=(), freeze=True):
    """A detectron2 config with cardd's keys, ``config_file`` merged, then ``opts`` (KEY VALUE ...)."""
    cfg = get_cfg()
    add_cardd_config(cfg)
    if config_file:
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"config file not found: {config_file}")
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if cfg.MODEL.DEVICE.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            logger.warning("CUDA is not available: running on CPU")
            cfg.MODEL.DEVICE = "cpu"
    if freeze:
        cfg.freeze()
    return cfg
