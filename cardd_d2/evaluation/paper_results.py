"""Published CarDD numbers (test set), as results dicts usable as ``paper=`` in the table renderers.

Source: the CarDD paper (Wang, Li, Wu, IEEE T-ITS 2023), Tables IV/V (mask AP / box AP) and the DCN+ R-101 per-class
mask AP. Only those numbers are filled; every other cell renders as "-".
"""
from typing import Dict

__all__ = ["PAPER_RESULTS", "paper_row_name"]

# method -> {backbone: (mask AP, box AP)}
_MAIN = {
    "Mask R-CNN": {"R-50": (48.4, 49.2), "R-101": (49.4, 51.1)},
    "Cascade Mask R-CNN": {"R-50": (48.6, 50.8), "R-101": (49.2, 52.0)},
    "GCNet": {"R-50": (48.7, 49.7), "R-101": (50.9, 52.6)},
    "HTC": {"R-50": (50.5, 52.7), "R-101": (50.9, 53.4)},
    "DCN": {"R-50": (51.3, 53.6), "R-101": (52.5, 54.3)},
    "DCN+": {"R-50": (55.6, 58.8), "R-101": (57.0, 60.6)},
}
_DCN_PLUS_R101_MASK_PER_CLASS = {
    "dent": 40.5,
    "scratch": 34.3,
    "crack": 16.6,
    "glass shatter": 89.6,
    "lamp broken": 70.8,
    "tire flat": 90.0,
}


def paper_row_name(method: str, backbone: str) -> str:
    """Row label used in PAPER_RESULTS, e.g. "DCN+ R-101"."""
    return f"{method} {backbone}"


def _build() -> Dict[str, Dict[str, Dict[str, float]]]:
    out = {}
    for method, by_backbone in _MAIN.items():
        for backbone, (mask_ap, box_ap) in by_backbone.items():
            out[paper_row_name(method, backbone)] = {"segm": {"AP": mask_ap}, "bbox": {"AP": box_ap}}
    out[paper_row_name("DCN+", "R-101")]["segm"].update(
        {f"AP-{c}": v for c, v in _DCN_PLUS_R101_MASK_PER_CLASS.items()}
    )
    return out


#: "<method> <backbone>" -> {"segm": {...}, "bbox": {...}} in percent.
PAPER_RESULTS = _build()
