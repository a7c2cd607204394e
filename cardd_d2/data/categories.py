"""CarDD's category list (official order, ids 1..6) and colours used for visualisation."""

CARDD_CATEGORIES = [
    {"id": 1, "name": "dent", "supercategory": "car damages", "color": [220, 20, 60]},
    {"id": 2, "name": "scratch", "supercategory": "car damages", "color": [255, 165, 0]},
    {"id": 3, "name": "crack", "supercategory": "car damages", "color": [30, 144, 255]},
    {"id": 4, "name": "glass shatter", "supercategory": "car damages", "color": [0, 200, 120]},
    {"id": 5, "name": "lamp broken", "supercategory": "car damages", "color": [186, 85, 211]},
    {"id": 6, "name": "tire flat", "supercategory": "car damages", "color": [240, 230, 40]},
]
CARDD_CLASS_NAMES = [c["name"] for c in CARDD_CATEGORIES]

# Paper Section III-C: small < 128^2 <= medium < 256^2 <= large (COCO uses 32^2 / 96^2).
CARDD_AREA_SMALL = 128**2
CARDD_AREA_LARGE = 256**2


def size_bucket(area: float) -> str:
    """CarDD size bucket of an instance area in pixels."""
    if area < CARDD_AREA_SMALL:
        return "small"
    if area < CARDD_AREA_LARGE:
        return "medium"
    return "large"
