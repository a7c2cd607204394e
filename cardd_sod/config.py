"""YAML configuration for the SOD pipeline (no detectron2/yacs dependency).

A config file is a nested mapping with UPPER_CASE section names.  It may name a ``_BASE_`` file (path relative
to the file itself, or a list of such paths); the base is loaded first and the file's keys are merged on top
(mappings merge recursively, everything else is replaced).  Files are merged over :data:`DEFAULTS`, so every
key that exists is listed there; a key not in the defaults is an error (typos do not silently pass).

Overrides use dotted keys with YAML-parsed values, e.g. ``["SOLVER.BASE_LR", "1e-4", "SOLVER.LR_STEPS", "[10]"]``
or ``["SOLVER.BASE_LR=1e-4"]``.
"""
from __future__ import annotations

import copy
import os
import re
from typing import Any, Iterable, Mapping, Sequence

import yaml

__all__ = ["SODConfig", "DEFAULTS", "get_sod_defaults", "load_sod_config", "merge_overrides"]


class SODConfig(dict):
    """A dict with attribute access (``cfg.SOLVER.BASE_LR``); nested mappings are SODConfig too."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for k, v in list(self.items()):
            if isinstance(v, Mapping) and not isinstance(v, SODConfig):
                super().__setitem__(k, SODConfig(v))

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __setitem__(self, key, value):
        if isinstance(value, Mapping) and not isinstance(value, SODConfig):
            value = SODConfig(value)
        super().__setitem__(key, value)

    def to_dict(self) -> dict:
        return {k: (v.to_dict() if isinstance(v, SODConfig) else copy.deepcopy(v)) for k, v in self.items()}

    def dump(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def clone(self) -> "SODConfig":
        return SODConfig(self.to_dict())


# Every key the pipeline reads.  Model YAMLs (configs/SOD/*.yaml) set the paper's Table VII values.
DEFAULTS: dict = {
    "MODEL": {
        "NAME": "csnet",            # csnet | poolnet | u2net | u2netp | sgl_krn
        "KWARGS": {},               # extra keyword arguments for cardd_sod.build_sod_model
        "WEIGHTS": "",              # optional state_dict / checkpoint to start from
        "DEVICE": "auto",           # auto | cpu | cuda | cuda:N
    },
    "DATA": {
        "ROOT": "datasets/CarDD_SOD",  # DUTS-style root holding CarDD-TR / CarDD-VAL / CarDD-TE
        "TRAIN_SPLIT": "TR",
        "TEST_SPLIT": "TE",
        "NUM_WORKERS": 2,
        "MAX_TRAIN_IMAGES": 0,      # 0 = all (tiny runs use a few)
        "MAX_TEST_IMAGES": 0,
        "STRICT_MASKS": False,      # True: non-binary masks are an error instead of warn + binarise (>128)
    },
    "INPUT": {
        # Preprocessing preset: "" = the model's own (see cardd_sod.data.PREPROCESS_PRESETS).
        "PRESET": "",
        # Optional overrides of the preset (null = keep the preset's value).
        "SIZE": None,               # [H, W] resize, or null for full resolution
        "CROP": None,               # U2-Net style random crop size [H, W]
        "MAX_SIZE": 0,              # >0: cap the longer side at full resolution (PoolNet/SGL-KRN); 0 = off
    },
    "SOLVER": {
        "OPTIMIZER": "adam",
        "BASE_LR": 1e-4,
        "BETAS": [0.9, 0.999],
        "EPS": 1e-8,
        "WEIGHT_DECAY": 0.0,
        "BATCH_SIZE": 1,
        "EPOCHS": 1,
        "LR_STEPS": [],             # epochs after which the lr is multiplied by GAMMA
        "GAMMA": 0.1,
        "ITER_SIZE": 1,             # gradient accumulation: optimizer step every ITER_SIZE batches
        "MAX_ITER": 0,              # >0: stop after this many optimizer steps (tiny runs)
        "CLIP_GRAD_NORM": 0.0,
        "AMP": "",                  # "" (fp32, as the paper) | "bf16" | "fp16" (fp16 uses a GradScaler; CUDA only)
        "CHECKPOINT_PERIOD": 1,     # epochs
        "LOG_PERIOD": 20,           # iterations between TensorBoard scalars
    },
    "TEST": {
        "EVAL_AT_END": True,
        "BATCH_SIZE": 1,
        "SAVE_PREDICTIONS": True,
    },
    "SEED": 0,
    "OUTPUT_DIR": "output/sod",
}


def get_sod_defaults() -> SODConfig:
    return SODConfig(copy.deepcopy(DEFAULTS))


def _merge(base: dict, new: Mapping, path: str, strict: bool, source: str) -> None:
    for k, v in new.items():
        key = f"{path}{k}"
        if strict and k not in base:
            raise KeyError(f"{source}: unknown config key {key!r}")
        if isinstance(v, Mapping) and isinstance(base.get(k), Mapping) and k != "KWARGS":
            _merge(base[k], v, key + ".", strict, source)
        else:
            if isinstance(v, str) and _NUMBER.match(v.strip()):
                v = float(v)  # YAML 1.1 reads '1e-4' as a string
            base[k] = copy.deepcopy(v) if not isinstance(v, Mapping) else dict(v)


def _load_yaml_chain(path: str, seen: tuple = ()) -> dict:
    path = os.path.abspath(path)
    if path in seen:
        raise ValueError(f"{path}: _BASE_ cycle ({' -> '.join(seen + (path,))})")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SOD config file not found: {path}")
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    bases = data.pop("_BASE_", None)
    merged: dict = {}
    if bases:
        for b in [bases] if isinstance(bases, str) else list(bases):
            bpath = b if os.path.isabs(b) else os.path.join(os.path.dirname(path), b)
            _merge(merged, _load_yaml_chain(bpath, seen + (path,)), "", False, bpath)
    _merge(merged, data, "", False, path)
    return merged


def _split_overrides(overrides: Sequence[str]) -> list[tuple[str, str]]:
    pairs, items, i = [], list(overrides), 0
    while i < len(items):
        item = items[i]
        if "=" in item and not item.startswith("="):
            k, v = item.split("=", 1)
            pairs.append((k, v))
            i += 1
        else:
            if i + 1 >= len(items):
                raise ValueError(f"override {item!r} has no value (use KEY VALUE pairs or KEY=VALUE)")
            pairs.append((item, items[i + 1]))
            i += 2
    return pairs


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _parse_value(raw: str):
    """YAML value; numbers such as '1e-3' (a string in YAML 1.1) become floats."""
    if raw == "":
        return ""
    value = yaml.safe_load(raw)
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value)
    return value


def merge_overrides(cfg: SODConfig, overrides: Iterable[str]) -> SODConfig:
    """Apply dotted ``KEY VALUE`` overrides in place (values parsed as YAML). Unknown keys raise KeyError."""
    for key, raw in _split_overrides(list(overrides)):
        value = _parse_value(raw)
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], dict):
                raise KeyError(f"unknown config key {key!r} (no section {p!r})")
            node = node[p]
        last = parts[-1]
        if last not in node and not (len(parts) >= 2 and parts[-2] == "KWARGS"):
            raise KeyError(f"unknown config key {key!r}")
        node[last] = value
    return cfg


def load_sod_config(path: str | None = None, overrides: Iterable[str] = ()) -> SODConfig:
    """Defaults <- YAML chain (``_BASE_``) <- dotted overrides."""
    cfg = get_sod_defaults().to_dict()
    if path:
        _merge(cfg, _load_yaml_chain(path), "", True, os.path.abspath(path))
    cfg = SODConfig(cfg)
    merge_overrides(cfg, overrides)
    return cfg


def parse_named_paths(items, flag: str) -> dict:
    """``["NAME=PATH", ...]`` from a repeatable command-line flag -> ``{NAME: PATH}`` (SystemExit on a bad item)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"{flag} expects NAME=PATH, got {item!r}")
        name, path = item.split("=", 1)
        out[name] = path
    return out
