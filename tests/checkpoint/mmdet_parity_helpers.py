"""Loading the mmdetection parity fixtures and building the cardd model that must reproduce them.

A fixture (tests/fixtures/mmdet_parity/<arch>.npz, written by tools/parity/make_mmdet_fixtures.py from the authors'
released mmdetection 2.25.2 code) holds a reduced-width model's mmdet state dict, fixed inputs, and what the
released code computed. Here the state dict goes through cardd's converter and is loaded strictly into the cardd
config of that architecture, reduced the same way.
"""
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List

import numpy as np
import torch
from detectron2.modeling import build_model

from cardd_d2.checkpoint import convert_mmdet_state_dict
from cardd_d2.engine import setup_cfg
from tiny_config import REPO_ROOT, config_path

FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures", "mmdet_parity")

# cardd config of each released architecture (the depth comes from the checkpoint).
CONFIGS = {
    "mask_rcnn": "CarDD/mask_rcnn_R_50_FPN.yaml",
    "cascade_mask_rcnn": "CarDD/cascade_mask_rcnn_R_101_FPN.yaml",
    "gcnet": "CarDD/gcnet_R_101_FPN.yaml",
    "htc": "CarDD/htc_R_101_FPN.yaml",
    "dcn": "CarDD/dcn_R_101_FPN.yaml",
    "dcn_plus": "CarDD/dcn_plus_R_101_FPN.yaml",
}
ARCHS = [a for a in CONFIGS if os.path.isfile(os.path.join(FIXTURES, f"{a}.npz"))]


def reduction_opts(reduction: dict) -> List[str]:
    """detectron2 keys for the fixture's reduced widths (mmdet ResNet base_channels w: stem w, res2 4w)."""
    w = reduction["base_channels"]
    return [
        "MODEL.RESNETS.STEM_OUT_CHANNELS", str(w),
        "MODEL.RESNETS.WIDTH_PER_GROUP", str(w),
        "MODEL.RESNETS.RES2_OUT_CHANNELS", str(4 * w),
        "MODEL.FPN.OUT_CHANNELS", str(reduction["fpn_channels"]),
        "MODEL.ROI_BOX_HEAD.FC_DIM", str(reduction["fc_dim"]),
        "MODEL.ROI_MASK_HEAD.CONV_DIM", str(reduction["mask_conv_dim"]),
    ]


@dataclass
class Fixture:
    arch: str
    meta: dict
    arrays: Dict[str, np.ndarray]

    def t(self, key: str) -> torch.Tensor:
        if key not in self.arrays:
            raise KeyError(f"{self.arch}.npz has no array {key!r}")
        return torch.from_numpy(np.array(self.arrays[key]))

    def keys(self, prefix: str) -> List[str]:
        return sorted(k for k in self.arrays if k.startswith(prefix))

    def mmdet_state_dict(self) -> Dict[str, torch.Tensor]:
        # stored in float16; every value was drawn float16-exact, so float() restores what mmdet ran with
        return {k[3:]: (v.float() if v.is_floating_point() else v)
                for k, v in ((k, self.t(k)) for k in self.keys("sd/"))}


@lru_cache(maxsize=None)
def load_fixture(arch: str) -> Fixture:
    path = os.path.join(FIXTURES, f"{arch}.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return Fixture(arch, json.loads(str(arrays.pop("meta"))), arrays)


def build_cardd_model(arch: str, *opts: str):
    """Converted fixture weights loaded strictly into the reduced cardd config (eval mode, CPU)."""
    fx = load_fixture(arch)
    conv = convert_mmdet_state_dict(fx.mmdet_state_dict(), num_classes=6, source=f"{arch}.npz")
    cfg = setup_cfg(config_path(CONFIGS[arch]),
                    ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"] + conv.overrides_as_opts()
                    + reduction_opts(fx.meta["reduction"]) + list(opts))
    torch.manual_seed(0)
    model = build_model(cfg)
    model.load_state_dict(conv.model, strict=True)
    model.eval()
    return model, cfg


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> float:
    """Max abs difference <= tol * max(1, max |expected|); returns the difference."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual.double() - expected.double()).abs().max().item() if expected.numel() else 0.0
    scale = max(1.0, expected.abs().max().item() if expected.numel() else 0.0)
    assert diff <= tol * scale, f"{what}: max |cardd - mmdet| = {diff:.3g} > {tol:g} x {scale:.3g}"
    return diff
