"""The checkpointer of training runs: class names inside every file, atomic files, resume past a damaged file.

* Every file it saves (periodic, final, best) carries ``THING_CLASSES_KEY``: the training dataset's class names,
  which inference reads back (:mod:`cardd_d2.checkpoint.class_names`).
* Files appear complete or not at all: each is written to a temporary file in the same folder and renamed over the
  target, so a run killed while saving leaves the previous files (and ``last_checkpoint``) intact.
* ``resume_or_load(resume=True)`` starts from the newest checkpoint that can be read; a damaged newer one is skipped
  with a warning that names it.
"""
from __future__ import annotations

import logging
import os
import re
from typing import List, Optional, Sequence

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from cardd_sod.fileio import atomic_open

from .class_names import THING_CLASSES_KEY

logger = logging.getLogger(__name__)

__all__ = ["TrainingCheckpointer"]

# PeriodicCheckpointer's names: "model_0004999.pth" (iteration 4999) and "model_final.pth".
_PERIODIC = re.compile(r"^model_(\d{7})\.pth$")
_FINAL = "model_final.pth"


class _AtomicWritePathManager:
    """detectron2's PathManager, except that local files opened for writing are written atomically."""

    def __getattr__(self, name):
        return getattr(PathManager, name)

    def open(self, path: str, mode: str = "r", **kwargs):
        if mode in ("w", "wb") and not kwargs and "://" not in str(path):
            return atomic_open(path, binary=mode == "wb")
        return PathManager.open(path, mode, **kwargs)


class TrainingCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that writes ``thing_classes`` into every file, saves atomically and resumes from the
    newest readable checkpoint.

    Args:
        thing_classes: class names of the training data (contiguous id order), or None for a model without classes.
        Other arguments: as :class:`detectron2.checkpoint.DetectionCheckpointer`.
    """

    def __init__(self, model, save_dir: str = "", *, thing_classes: Optional[Sequence[str]] = None,
                 save_to_disk=None, **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.path_manager = _AtomicWritePathManager()
        self.thing_classes = None if thing_classes is None else [str(n) for n in thing_classes]
        self._preloaded = None  # (path, data) of the file that resume_or_load already read

    def save(self, name: str, **kwargs):
        if self.thing_classes is not None:
            kwargs.setdefault(THING_CLASSES_KEY, list(self.thing_classes))
        super().save(name, **kwargs)

    def _resume_candidates(self) -> List[str]:
        """Checkpoint files of ``save_dir``, newest first: the tagged last one, the final one, then periodic ones
        by decreasing iteration."""
        tagged = self.get_checkpoint_file()
        names = os.listdir(self.save_dir) if os.path.isdir(self.save_dir) else []
        periodic = sorted((n for n in names if _PERIODIC.match(n)), key=lambda n: -int(_PERIODIC.match(n).group(1)))
        ordered = ([_FINAL] if _FINAL in names else []) + periodic
        paths = ([tagged] if tagged else []) + [os.path.join(self.save_dir, n) for n in ordered]
        return list(dict.fromkeys(paths))

    def _newest_readable_checkpoint(self) -> str:
        skipped = []
        for path in self._resume_candidates():
            try:
                data = self._torch_load(path)
                if not isinstance(data, dict) or "model" not in data:
                    raise ValueError("no 'model' entry")
            except Exception as e:  # noqa: BLE001 - any decoder error means "damaged": try the previous file
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                logger.warning("Cannot resume from %s (%s: %s); trying the previous checkpoint",
                               path, type(e).__name__, reason)
                skipped.append(path)
                continue
            if skipped:
                logger.warning("Resuming from %s instead of the damaged newer checkpoint(s): %s",
                               path, ", ".join(skipped))
            self._preloaded = (path, data)
            return path
        raise RuntimeError(
            f"--resume: no readable checkpoint in {self.save_dir} (damaged: {', '.join(skipped) or 'none'}); "
            "remove last_checkpoint to start from MODEL.WEIGHTS"
        )

    def _torch_load(self, f):
        if self._preloaded is not None and self._preloaded[0] == f:
            data, self._preloaded = self._preloaded[1], None
            return data
        return super()._torch_load(f)

    def resume_or_load(self, path: str, *, resume: bool = True):
        if resume and self.has_checkpoint():
            newest = self._newest_readable_checkpoint()
            checkpoint = self.load(newest)
            self._check_resumed_classes(newest, checkpoint)
            return checkpoint
        return self.load(path, checkpointables=[])

    def _check_resumed_classes(self, path: str, checkpoint: dict):
        saved = checkpoint.get(THING_CLASSES_KEY)
        if saved is not None and self.thing_classes is not None and list(saved) != self.thing_classes:
            raise ValueError(
                f"--resume: {path} was trained on classes {list(saved)} but the training data now has "
                f"{self.thing_classes}; resume in a new OUTPUT_DIR or train on the same data"
            )
