"""The one way cardd's tools build a config, and the dataset set-up shared by the command-line tools."""
import logging
import os
from typing import Any, Mapping, Optional, Sequence

from cardd_d2.config import get_cardd_cfg
from cardd_d2.data import register_datasets_for_cfg  # noqa: F401  (part of the tools' set-up)

logger = logging.getLogger(__name__)


def _set_key(cfg, key: str, value: Any):
    node = cfg
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    if leaf not in node:
        raise KeyError(f"unknown config key: {key}")
    node[leaf] = value


def setup_cfg(config_file: Optional[str] = None, opts: Sequence[str] = (), freeze: bool = True,
              settings: Optional[Mapping[str, Any]] = None):
    """A detectron2 config with cardd's keys: ``config_file`` merged, then ``opts`` (KEY VALUE ...), then
    ``settings`` ({"MODEL.WEIGHTS": value, ...}, for values a tool's own flags give, set as they are).

    A config that asks for CUDA on a machine without it gets ``MODEL.DEVICE`` "cpu", with a warning.
    """
    cfg = get_cardd_cfg()
    if config_file:
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"config file not found: {config_file}")
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    for key, value in (settings or {}).items():
        _set_key(cfg, key, value)
    if str(cfg.MODEL.DEVICE).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            logger.warning("MODEL.DEVICE is %s but CUDA is not available: running on CPU", cfg.MODEL.DEVICE)
            cfg.MODEL.DEVICE = "cpu"
    if freeze:
        cfg.freeze()
    return cfg
