"""The one way cardd's tools build a config, and the dataset set-up shared by the command-line tools."""
import logging
import os
import re
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


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _PlainFormatter(logging.Formatter):
    """A formatter's output without ANSI colour codes (detectron2 colours the config it logs, also in log.txt)."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self._inner = inner

    def format(self, record):
        return _ANSI.sub("", self._inner.format(record))


def _writes_to_file(handler: logging.Handler) -> bool:
    name = getattr(getattr(handler, "stream", None), "name", None)
    return isinstance(name, str) and not name.startswith("<") and os.path.isfile(name)


def default_cardd_setup(cfg, args):
    """detectron2's ``default_setup`` (loggers, environment, config.yaml, seeds) for cardd's training tools, plus:
    cardd's own INFO lines on the console and in ``OUTPUT_DIR/log.txt``, and no colour codes in log files."""
    from detectron2.engine import default_setup
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    rank = comm.get_rank()
    # The same calls as default_setup's (setup_logger is cached by its arguments), made first so that the log files
    # are plain before default_setup logs the colour-highlighted config.
    loggers = [setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank, name="fvcore"),
               setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank),
               setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank, name="cardd_d2", abbrev_name="cardd")]
    for log in loggers:
        for handler in log.handlers:
            if _writes_to_file(handler) and not isinstance(handler.formatter, _PlainFormatter):
                handler.setFormatter(_PlainFormatter(handler.formatter))
    default_setup(cfg, args)
