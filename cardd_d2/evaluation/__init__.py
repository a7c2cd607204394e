"""CarDD evaluation: COCO AP with CarDD's size buckets, per-class AP, paper-layout tables."""
from .cardd_evaluation import CarDDEvaluator, build_cardd_evaluator  # noqa: F401
from .coco_metrics import (  # noqa: F401
    CARDD_AREA_RANGES,
    COCO_AREA_RANGES,
    evaluate_coco_api,
    evaluate_coco_json,
    load_coco_gt,
    run_cocoeval,
    summarize_cocoeval,
)
from .tables import (  # noqa: F401
    load_results_json,
    render_coco_sizes_table,
    render_main_table,
    render_per_class_table,
    render_results_markdown,
    write_results,
)
from .paper_results import PAPER_RESULTS, paper_row_name  # noqa: F401
