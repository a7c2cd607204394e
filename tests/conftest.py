"""Shared fixtures: synthetic CarDD data and tiny detectron2 configs that train in seconds on CPU."""
import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tiny_config import CONFIGS, REPO_ROOT, TINY_OVERRIDES, config_path  # noqa: F401,E402


@pytest.fixture(scope="session")
def synthetic_cardd(tmp_path_factory):
    """make_synthetic_cardd() with its defaults, written once per test worker; registered as cardd_* splits."""
    from cardd_d2.data.synthetic import make_synthetic_cardd

    root = tmp_path_factory.mktemp("synthetic_cardd")
    return make_synthetic_cardd(str(root), num_images=(8, 4, 4), num_undamaged=4)


@pytest.fixture
def tiny_cfg(tmp_path):
    """Factory: tiny_cfg(config_file_or_None, *overrides) -> unfrozen CfgNode with cardd keys and TINY_OVERRIDES.

    ``config_file`` may be absolute or relative to configs/. OUTPUT_DIR is a fresh temporary folder.
    """
    from cardd_d2.engine import setup_cfg

    def make(config_file=None, *overrides):
        if config_file and not os.path.isabs(config_file):
            config_file = config_path(config_file)
        opts = TINY_OVERRIDES + ["OUTPUT_DIR", str(tmp_path / "output")] + list(overrides)
        return setup_cfg(config_file, opts, freeze=False)

    return make
