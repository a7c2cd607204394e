"""Damaged/undamaged classifier and damage assessment.

- ``instances``: detectron2 Instances -> JSON-ready dicts (COCO RLE masks, CarDD size buckets, repair priority).
- ``images``: robust image reading (modes, EXIF, huge images) and input discovery.
- ``classifier`` / ``gate``: the paper's VGG16 damaged/undamaged classifier and the discard gate.
- ``report``: ``assess(inputs, predictor, gate=None, ...) -> report dict`` (+ JSON, annotated images, HTML).
- ``challenging``: the paper's "more challenging setting" (Table VI).
- ``service``: FastAPI app factory (imported on demand: ``from cardd_d2.assessment.service import create_app``).
"""
from .gate import DamageGate  # noqa: F401
from .images import ImageLoadError, discover_inputs, load_image  # noqa: F401
from .instances import DEFAULT_REPAIR_PRIORITY, instances_to_dicts, mask_to_rle, rle_to_mask, sort_by_priority  # noqa: F401
from .report import SCHEMA_VERSION, assess, assess_image, validate_report  # noqa: F401
