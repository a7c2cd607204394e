"""Damage assessment of a batch of images: ``assess(inputs, predictor, gate=None, ...) -> report dict``.

The report follows ``report_schema.json`` (JSON Schema draft 2020-12) next to this module; its ``schema`` and
``schema_version`` fields name the version. Per input file there is one entry in ``images`` with a ``status``:

- ``ok``: the detector ran; ``instances`` lists the damages ordered by repair priority (see
  :data:`cardd_d2.assessment.instances.DEFAULT_REPAIR_PRIORITY`), each with ``priority_rank``;
- ``discarded``: the damaged/undamaged gate found P(undamaged) above its threshold, the detector did not run;
- ``skipped``: a file found in a folder that is not an image (by extension);
- ``error``: the file could not be used (``reason`` says why: not an image, truncated, missing, empty folder...).

Conversions that did not stop processing (grayscale, alpha, 16-bit, CMYK, EXIF rotation, downscaling) are listed in
``warnings``. When ``output_dir`` is given, ``report.json`` (first, atomically), annotated images
(``images/<name>.jpg``) and ``index.html`` (thumbnails embedded as base64, each linking to its annotated image) are
written there; problems writing the page or an image never lose results (see :func:`write_outputs`).
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import logging
import os
import time
from typing import Callable, List, Optional, Sequence, Tuple, Union
from urllib.parse import quote

import numpy as np

from .images import DEFAULT_MAX_SIDE, ImageLoadError, InputItem, LoadedImage, discover_inputs, load_image
from cardd_d2.data.categories import CARDD_CLASS_NAMES
from cardd_sod.fileio import atomic_open, atomic_save_json

from .instances import DEFAULT_REPAIR_PRIORITY, instances_to_dicts, sort_by_priority

logger = logging.getLogger(__name__)

SCHEMA_NAME = "cardd.assessment.report"
SCHEMA_VERSION = "1.0"
SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "report_schema.json")
THUMBNAIL_SIDE = 320

__all__ = ["SCHEMA_NAME", "SCHEMA_VERSION", "SCHEMA_PATH", "ReportWriteError", "assess", "assess_image", "load_schema",
           "validate_report", "write_html", "write_outputs", "write_report"]


def load_schema() -> dict:
    with open(SCHEMA_PATH, "r", encoding="utf-8") as f:
        return json.load(f)


def validate_report(report: dict) -> None:
    """Raise ``jsonschema.ValidationError`` when ``report`` does not follow ``report_schema.json``."""
    try:
        import jsonschema
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("validate_report needs the 'jsonschema' package (pip install jsonschema)") from e
    jsonschema.validate(report, load_schema())


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _record(source: str, name: str, status: str, reason: Optional[str] = None) -> dict:
    return {"file": source, "name": name, "status": status, "reason": reason, "warnings": [],
            "width": None, "height": None, "original_width": None, "original_height": None, "scale": 1.0,
            "damaged_probability": None, "discarded": False, "instances": [], "counts": {},
            "annotated_image": None, "time_s": 0.0}


def _thumbnail_b64(rgb: np.ndarray, side: int = THUMBNAIL_SIDE) -> str:
    from PIL import Image

    im = Image.fromarray(rgb)
    im.thumbnail((side, side))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def assess_image(
    image: LoadedImage,
    predictor: Callable,
    gate=None,
    *,
    name: str = "",
    class_names: Optional[Sequence[str]] = None,
    metadata=None,
    score_threshold: float = 0.0,
    priority: Sequence[str] = DEFAULT_REPAIR_PRIORITY,
    with_polygons: bool = False,
    draw: bool = False,
) -> tuple:
    """Assess one decoded image. Returns (image record, annotated RGB array or None)."""
    t0 = time.perf_counter()
    rec = _record(image.source, name or os.path.splitext(os.path.basename(image.source))[0], "ok")
    rec.update(width=image.width, height=image.height, original_width=image.original_size[1],
               original_height=image.original_size[0], scale=round(float(image.scale), 6),
               warnings=list(image.warnings))
    vis = None
    if gate is not None:
        p = float(gate.damaged_proba([image.bgr])[0])
        rec["damaged_probability"] = round(p, 6)
        if gate.discard(p):
            rec["status"] = "discarded"
            rec["discarded"] = True
            rec["reason"] = (f"P(undamaged)={1.0 - p:.3f} > discard threshold {gate.discard_threshold}; "
                             "detector not run")
            rec["time_s"] = round(time.perf_counter() - t0, 4)
            return rec, (image.bgr[:, :, ::-1] if draw else None)
    outputs = predictor(image.bgr)
    instances = outputs["instances"]
    if class_names is None and metadata is not None:
        class_names = metadata.get("thing_classes")
    dicts = instances_to_dicts(instances, class_names, (image.height, image.width), with_polygon=with_polygons,
                               score_threshold=score_threshold)
    rec["instances"] = sort_by_priority(dicts, priority)
    counts = {}
    for d in rec["instances"]:
        counts[d["class"]] = counts.get(d["class"], 0) + 1
    rec["counts"] = counts
    if draw:
        from .predictor import draw_instances, make_metadata

        if metadata is None:
            metadata = make_metadata(class_names if class_names is not None else CARDD_CLASS_NAMES)
        vis = draw_instances(image.bgr, instances, metadata, score_threshold=score_threshold)
    rec["time_s"] = round(time.perf_counter() - t0, 4)
    return rec, vis


def _summary(images: List[dict]) -> dict:
    by_status = {s: sum(1 for r in images if r["status"] == s) for s in ("ok", "discarded", "skipped", "error")}
    per_class = {}
    for r in images:
        for k, v in r["counts"].items():
            per_class[k] = per_class.get(k, 0) + v
    return {
        "num_inputs": len(images),
        "num_ok": by_status["ok"],
        "num_discarded": by_status["discarded"],
        "num_skipped": by_status["skipped"],
        "num_failed": by_status["error"],
        "num_with_damage": sum(1 for r in images if r["status"] == "ok" and r["instances"]),
        "num_instances": sum(len(r["instances"]) for r in images),
        "instances_per_class": per_class,
    }


def new_report(images: List[dict], model_info: Optional[dict] = None, priority=DEFAULT_REPAIR_PRIORITY,
               score_threshold: float = 0.0, elapsed_s: float = 0.0) -> dict:
    return {
        "schema": SCHEMA_NAME,
        "schema_version": SCHEMA_VERSION,
        "created": _now(),
        "model": dict(model_info or {}),
        "settings": {"score_threshold": float(score_threshold), "priority": list(priority)},
        "summary": _summary(images),
        "elapsed_s": round(float(elapsed_s), 3),
        "images": images,
    }


def assess(
    inputs: Union[str, Sequence[str]],
    predictor: Callable,
    gate=None,
    *,
    class_names: Optional[Sequence[str]] = None,
    metadata=None,
    output_dir: Optional[str] = None,
    score_threshold: float = 0.0,
    priority: Sequence[str] = DEFAULT_REPAIR_PRIORITY,
    with_polygons: bool = False,
    save_images: bool = True,
    write_html_page: bool = True,
    max_side: int = DEFAULT_MAX_SIDE,
    progress: bool = True,
    model_info: Optional[dict] = None,
) -> dict:
    """Assess image files, folders, glob patterns or list files (see :func:`discover_inputs`) -> report dict.

    ``predictor``: callable BGR uint8 array -> ``{"instances": Instances}`` (detectron2's DefaultPredictor).
    ``gate``: optional :class:`DamageGate`. A file that fails never stops the batch: it is recorded with a reason.
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    items: List[InputItem] = discover_inputs(inputs)
    if class_names is None:
        class_names = metadata.get("thing_classes") if metadata is not None else None
    draw = bool(output_dir) and (save_images or write_html_page)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        if save_images:
            os.makedirs(os.path.join(output_dir, "images"), exist_ok=True)
    records, thumbs = [], {}
    for item in tqdm(items, desc="assess", unit="img", disable=not progress):
        if item.error:
            records.append(_record(item.path, item.name, "error", item.error))
            continue
        if item.skip_reason:
            records.append(_record(item.path, item.name, "skipped", item.skip_reason))
            continue
        try:
            img = load_image(item.path, max_side=max_side)
        except ImageLoadError as e:
            logger.warning("skipping %s", e)
            records.append(_record(item.path, item.name, "error", e.reason))
            continue
        try:
            rec, vis = assess_image(img, predictor, gate, name=item.name, class_names=class_names,
                                    metadata=metadata, score_threshold=score_threshold, priority=priority,
                                    with_polygons=with_polygons, draw=draw)
        except Exception as e:  # noqa: BLE001 - one bad image must not lose the batch
            logger.exception("assessment failed for %s", item.path)
            rec = _record(item.path, item.name, "error", f"processing failed: {type(e).__name__}: {e}")
            rec["warnings"] = list(img.warnings)
            records.append(rec)
            continue
        if vis is not None:
            if save_images and output_dir:
                from PIL import Image

                rel = os.path.join("images", item.name + ".jpg")
                try:
                    Image.fromarray(vis).save(os.path.join(output_dir, rel), quality=90)
                    rec["annotated_image"] = rel.replace(os.sep, "/")
                except (OSError, ValueError) as e:
                    rec["warnings"].append(f"annotated image not written: {type(e).__name__}: {e}")
            if write_html_page:
                thumbs[item.name] = _thumbnail_b64(vis)
        records.append(rec)
    report = new_report(records, model_info, priority, score_threshold, time.perf_counter() - t0)
    if output_dir:
        write_outputs(report, output_dir, thumbs if write_html_page else None)
    return report


class ReportWriteError(OSError):
    """report.json could not be written (the results exist only in memory)."""


def write_outputs(report: dict, output_dir: str, thumbnails: Optional[dict] = None) -> None:
    """``report.json`` first (atomically), then ``index.html`` when ``thumbnails`` is given.

    A failure to write the page never costs the results: it is logged and added to ``report["output_errors"]``,
    and report.json is written again with it. A failure to write report.json raises :class:`ReportWriteError`.
    """
    json_path = os.path.join(output_dir, "report.json")
    write_report(report, json_path)
    if thumbnails is None:
        return
    try:
        write_html(report, os.path.join(output_dir, "index.html"), thumbnails)
    except Exception as e:  # noqa: BLE001 - the results are already safe in report.json
        msg = f"index.html not written: {type(e).__name__}: {e}"
        logger.error("%s (the results are in %s)", msg, json_path)
        report.setdefault("output_errors", []).append(msg)
        write_report(report, json_path)


def write_report(report: dict, path: str) -> str:
    """Write ``report`` as JSON atomically; :class:`ReportWriteError` names the file when that fails."""
    try:
        return atomic_save_json(report, path, indent=1)
    except (OSError, TypeError, ValueError) as e:
        raise ReportWriteError(f"{path}: cannot write the report ({type(e).__name__}: {e})") from e


_CSS = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:14px}th{background:#f3f3f3}
.ok{color:#176117}.damage{color:#8a2a00}.discarded{color:#555}.error{color:#b00020}.skipped{color:#8a6d00}
img{max-width:320px}ul{margin:0;padding-left:1.2em}dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px}
dt{font-weight:bold}dd{margin:0}"""

_STATUS_TEXT = {"discarded": "discarded by the gate (judged undamaged)", "skipped": "skipped (not an image file)",
                "error": "failed"}


def _text(value) -> str:
    """HTML-escaped text of any str, including file names that are not valid UTF-8 (shown as \\xNN escapes)."""
    s = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return html.escape(s)


def _href(rel_path: str) -> str:
    """A relative link to a file whose name may hold any bytes the OS allows."""
    return html.escape(quote(os.fsencode(rel_path)), quote=True)


def _status_text(r: dict) -> Tuple[str, str]:
    if r["status"] == "ok":
        n = len(r["instances"])
        return ("damage", f"{n} damage{'s' if n != 1 else ''} detected") if n else ("ok", "no damage detected")
    return r["status"], _STATUS_TEXT[r["status"]]


def _settings_block(report: dict) -> str:
    m, st = report.get("model", {}), report.get("settings", {})
    gate = m.get("gate")
    rows = [("config", m.get("config_file", "-")), ("weights", m.get("weights", "-")),
            ("classes", ", ".join(m.get("class_names", [])) or "-"),
            ("minimum detection score", st.get("score_threshold", "-")),
            ("damaged/undamaged gate", "none (every image goes to the detector)" if not gate else
             f"{gate.get('weights', '?')}: discard when P(undamaged) > {gate.get('discard_threshold', '?')}")]
    return "<dl>" + "".join(f"<dt>{_text(k)}</dt><dd>{_text(v)}</dd>" for k, v in rows) + "</dl>"


def _damage_items(r: dict, limit: int = 20) -> str:
    items = [f"<li>{_text(d['class'])}: score {d['score']:.2f}, size {_text(d['size_bucket'])}, "
             f"{d['area_pct']:.2f}% of the image area</li>" for d in r["instances"][:limit]]
    if len(r["instances"]) > limit:
        items.append(f"<li>... {len(r['instances']) - limit} more (see report.json)</li>")
    return "<ul>" + "".join(items) + "</ul>" if items else ""


def write_html(report: dict, path: str, thumbnails: Optional[dict] = None) -> str:
    """One HTML page: thumbnails inlined as base64 data URIs, each linking to its full annotated image."""
    thumbnails = thumbnails or {}
    s = report["summary"]
    with_gate = any(r["damaged_probability"] is not None for r in report["images"])
    counts = [("images", s["num_inputs"]), ("with damage", s["num_with_damage"]),
              ("no damage detected", s["num_ok"] - s["num_with_damage"]),
              ("discarded by the gate", s["num_discarded"]), ("skipped", s["num_skipped"]),
              ("failed", s["num_failed"]), ("damages found", s["num_instances"])]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Car damage assessment</title>",
        f"<style>{_CSS}</style></head><body><h1>Car damage assessment</h1>",
        f"<p>{_text(report['created'])} &middot; schema {_text(report['schema'])} v{_text(report['schema_version'])}"
        "</p>",
        _settings_block(report),
        "<p>" + ", ".join(f"{_text(k)}: {v}" for k, v in counts) + "</p>",
        "<table><tr><th>image</th><th>file</th><th>result</th>" + ("<th>P(damaged)</th>" if with_gate else "")
        + "<th>damages, in repair order</th><th>notes</th></tr>",
    ]
    for r in report["images"]:
        thumb = thumbnails.get(r["name"])
        img = f"<img alt='{_text(r['name'])}' src='data:image/jpeg;base64,{thumb}'>" if thumb else ""
        if img and r.get("annotated_image"):
            img = f"<a href='{_href(r['annotated_image'])}'>{img}</a>"
        css, label = _status_text(r)
        p = ""
        if with_gate:
            p = "<td>-</td>" if r["damaged_probability"] is None else f"<td>{r['damaged_probability']:.3f}</td>"
        notes = ([r["reason"]] if r["reason"] else []) + r["warnings"]
        parts.append(f"<tr><td>{img}</td><td>{_text(r['file'])}</td><td class='{css}'>{_text(label)}</td>{p}"
                     f"<td>{_damage_items(r)}</td><td>{'<br>'.join(_text(n) for n in notes)}</td></tr>")
    parts.append("</table></body></html>")
    with atomic_open(path) as f:
        f.write("".join(parts))
    return path
