"""Paper-layout Markdown tables and results.json round trip."""
import math

from cardd_d2.evaluation import (
    PAPER_RESULTS,
    load_results_json,
    render_main_table,
    render_per_class_table,
    render_results_markdown,
    write_results,
)

NAN = float("nan")
OURS = {
    "segm": {"AP": 51.234, "AP50": 70.0, "AP75": 55.55, "APs": 20.0, "APm": 40.0, "APl": NAN,
             "coco_APs": 1.0, "coco_APm": 2.0, "coco_APl": 3.0,
             "AP-tire flat": 90.04, "AP-dent": 40.0, "AP-scratch": 30.0, "AP-crack": NAN,
             "AP-glass shatter": 88.0, "AP-lamp broken": 70.0},
    "bbox": {"AP": 53.0, "AP50": 72.0, "AP75": 58.0, "APs": 21.0, "APm": 41.0, "APl": 60.0},
}


def rows_of(md):
    return [line for line in md.strip().splitlines() if line.startswith("|")]


def test_main_table_layout_and_paper_rows():
    md = render_main_table({"DCN+ R-101": OURS, "Mask R-CNN R-50": {}}, paper=PAPER_RESULTS)
    lines = rows_of(md)
    assert lines[0] == ("| Method | mask AP | mask AP50 | mask AP75 | mask APS | mask APM | mask APL "
                        "| box AP | box AP50 | box AP75 | box APS | box APM | box APL |")
    assert lines[1].startswith("|---|---:|")
    assert lines[2] == "| DCN+ R-101 | 51.2 | 70.0 | 55.5 | 20.0 | 40.0 | - | 53.0 | 72.0 | 58.0 | 21.0 | 41.0 | 60.0 |"
    assert lines[3] == "| DCN+ R-101 (paper) | 57.0 | - | - | - | - | - | 60.6 | - | - | - | - | - |"
    assert lines[4].startswith("| Mask R-CNN R-50 | - |")
    assert lines[5].startswith("| Mask R-CNN R-50 (paper) | 48.4 |")
    assert len(lines) == 2 + 2 + 2 + (len(PAPER_RESULTS) - 2)  # paper-only methods appended
    assert all(line.count("|") == 14 for line in lines)


def test_task_aliases_and_no_paper():
    md = render_main_table({"x": {"mask": {"AP": 1.0}, "box": {"AP": 2.0}}}, tasks=("segm", "bbox"), digits=2)
    assert rows_of(md)[2] == "| x | 1.00 | - | - | - | - | - | 2.00 | - | - | - | - | - |"


def test_per_class_table_paper_order_and_nan():
    md = render_per_class_table({"DCN+ R-101": OURS}, paper=PAPER_RESULTS)
    lines = rows_of(md)
    assert lines[0] == ("| Method | mask AP dent | mask AP scratch | mask AP crack | mask AP glass shatter "
                        "| mask AP lamp broken | mask AP tire flat |")
    assert lines[2] == "| DCN+ R-101 | 40.0 | 30.0 | - | 88.0 | 70.0 | 90.0 |"
    assert lines[3] == "| DCN+ R-101 (paper) | 40.5 | 34.3 | 16.6 | 89.6 | 70.8 | 90.0 |"
    assert "Mask R-CNN R-50 (paper) | - | - |" in md


def test_per_class_any_class_names():
    res = {"bbox": {"AP50-b": 2.0, "AP50-a": 1.0}}
    lines = rows_of(render_per_class_table({"m": res}, task="bbox", metric="AP50"))
    assert lines[0] == "| Method | box AP50 b | box AP50 a |" and lines[2] == "| m | 2.0 | 1.0 |"


def test_results_markdown_and_json_round_trip(tmp_path):
    paths = write_results(OURS, str(tmp_path), method="run1", meta={"dataset": "d"})
    loaded = load_results_json(paths["json"])
    assert math.isnan(loaded["segm"]["APl"]) and loaded["segm"]["AP"] == 51.234 and loaded["meta"] == {"dataset": "d"}
    md = open(paths["md"]).read()
    assert md == render_results_markdown(OURS, method="run1")
    assert "| run1 | 51.2 |" in md and "AP by COCO size buckets" in md and "Per-class mask AP" in md
    assert "Per-class box" not in md  # no per-class box numbers, no empty table
    assert "NaN" not in open(paths["json"]).read()
