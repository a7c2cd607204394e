import json
import os
import re
from urllib.parse import unquote, unquote_to_bytes

import jsonschema
import pytest
from assessment_helpers import PARTS, FakePredictor, constant_gate, rgb_image, save, write_problem_files

from cardd_d2.assessment import assess, validate_report
from cardd_d2.assessment.report import load_schema
from cardd_cli import main as cardd_main


@pytest.fixture(scope="module")
def problem_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("inputs"))
    write_problem_files(d)
    return d


def test_assess_bad_inputs_never_lose_the_batch(problem_dir, tmp_path):
    pred = FakePredictor()
    empty = tmp_path / "empty"
    empty.mkdir()
    out = str(tmp_path / "out")
    report = assess([problem_dir, str(empty)], pred, output_dir=out, progress=False)
    validate_report(report)
    recs = {os.path.basename(r["file"].rstrip(os.sep)) + ("/" if r["file"] == str(empty) else ""): r
            for r in report["images"] if "car.jpg" not in r["file"]}
    ok = {"good.jpg", "gray.png", "rgba.png", "deep16.png", "cmyk.jpg", "rotated.jpg", "huge.png"}
    failed = {"truncated.jpg": "truncated", "corrupt.jpg": "corrupt", "notes_renamed.jpg": "not an image",
              "empty.png": "empty file", "empty/": "empty folder"}
    for name in ok:
        assert recs[name]["status"] == "ok", (name, recs[name]["reason"])
        assert len(recs[name]["instances"]) == 5
    for name, reason in failed.items():
        assert recs[name]["status"] == "error" and reason in recs[name]["reason"], (name, recs[name]["reason"])
    assert recs["readme.txt"]["status"] == "skipped"
    assert any("EXIF" in w for w in recs["rotated.jpg"]["warnings"])
    assert recs["huge.png"]["scale"] < 1 and recs["huge.png"]["original_width"] == 10050
    dups = [r for r in report["images"] if r["file"].endswith("car.jpg")]
    assert len(dups) == 2 and len({r["name"] for r in dups}) == 2 and all(r["status"] == "ok" for r in dups)
    assert pred.calls == len(ok) + 2
    s = report["summary"]
    assert (s["num_ok"], s["num_failed"], s["num_skipped"]) == (len(ok) + 2, len(failed), 1)
    assert s["num_instances"] == 5 * (len(ok) + 2)
    # repair priority: crack (id 2) first, then dent (0), scratch (1), tire flat (5); ties by score
    order = [(d["class"], d["score"]) for d in recs["good.jpg"]["instances"]]
    assert order == [("crack", 0.95), ("crack", 0.6), ("dent", 0.8), ("scratch", 0.9), ("tire flat", 0.7)]
    # files on disk: one report per batch, annotated images for processed files, a self-contained page
    with open(os.path.join(out, "report.json")) as f:
        assert json.load(f)["summary"] == s
    for r in report["images"]:
        if r["status"] == "ok":
            assert os.path.isfile(os.path.join(out, r["annotated_image"]))
        else:
            assert r["annotated_image"] is None
    html = open(os.path.join(out, "index.html"), encoding="utf-8").read()
    assert html.count("data:image/jpeg;base64,") == len(ok) + 2
    assert not re.search(r"""src=['"](?!data:)""", html)  # nothing loaded from elsewhere
    links = re.findall(r"href='([^']*)'", html)  # each thumbnail links to its full annotated image
    assert len(links) == len(ok) + 2 and all(os.path.isfile(os.path.join(out, unquote(u))) for u in links)
    assert "truncated" in html


def test_gate_discards_and_reports_probability(problem_dir, tmp_path):
    pred = FakePredictor()
    good = save(rgb_image(), str(tmp_path / "one.jpg"))
    rep = assess([good], pred, constant_gate(0.02), progress=False)
    (r,) = rep["images"]
    assert r["status"] == "discarded" and r["discarded"] and r["instances"] == [] and pred.calls == 0
    assert r["damaged_probability"] == pytest.approx(0.02, abs=1e-4) and "0.9" in r["reason"]
    rep = assess([good], pred, constant_gate(0.5), progress=False)
    assert rep["images"][0]["status"] == "ok" and pred.calls == 1 and rep["summary"]["num_discarded"] == 0
    validate_report(rep)


def test_predictor_exception_is_recorded(tmp_path):
    def broken(img):
        raise RuntimeError("boom")

    good = save(rgb_image(), str(tmp_path / "one.jpg"))
    rep = assess([good, good], broken, progress=False)
    assert [r["status"] for r in rep["images"]] == ["error", "error"]
    assert "RuntimeError: boom" in rep["images"][0]["reason"]


def test_schema_rejects_malformed_reports(tmp_path):
    rep = assess([save(rgb_image(), str(tmp_path / "x.png"))], FakePredictor(), progress=False)
    validate_report(rep)
    schema = load_schema()
    bad = json.loads(json.dumps(rep))
    bad["images"][0]["status"] = "fine"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad = json.loads(json.dumps(rep))
    bad["images"][0]["instances"][0]["size_bucket"] = "huge"
    with pytest.raises(jsonschema.ValidationError):
        validate_report(bad)
    bad = json.loads(json.dumps(rep))
    bad["schema_version"] = "0.9"
    with pytest.raises(jsonschema.ValidationError):
        validate_report(bad)


def test_cli_assess_with_real_tiny_detector_and_gate(tiny_config_file, tiny_weights, tmp_path, capsys):
    from cardd_d2.assessment.classifier import save_checkpoint

    gate = constant_gate(0.5)
    ckpt = save_checkpoint(str(tmp_path / "gate.pth"), gate.model, "tiny", 32, 0)
    a = save(rgb_image(h=60, w=90, seed=1), str(tmp_path / "in" / "a.jpg"))
    save(rgb_image(h=70, w=50, seed=2)[:, :, 0], str(tmp_path / "in" / "b.png"))
    lst = tmp_path / "list.txt"
    lst.write_text("in/a.jpg\nin/b.png\n")
    out = str(tmp_path / "out")
    rc = cardd_main(["assess", "--config-file", tiny_config_file, "--classifier-weights", ckpt,
                     "--confidence-threshold", "0.0", "--no-progress", str(lst), "--output", out,
                     "MODEL.WEIGHTS", tiny_weights])  # a trailing KEY VALUE config override
    assert rc == 0
    rep = json.load(open(os.path.join(out, "report.json")))
    validate_report(rep)
    assert [r["status"] for r in rep["images"]] == ["ok", "ok"]
    assert rep["model"]["gate"]["input_size"] == 32
    assert all(r["damaged_probability"] == pytest.approx(0.5, abs=1e-3) for r in rep["images"])
    inst = rep["images"][0]["instances"]
    assert 1 <= len(inst) <= 3 and all(d["mask"]["size"] == [60, 90] for d in inst)
    assert os.path.isfile(os.path.join(out, "images", "a.jpg")) and os.path.isfile(os.path.join(out, "index.html"))
    # one failing input -> non-zero exit status, the good one is still assessed
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    rc = cardd_main(["assess", "--config-file", tiny_config_file, "--weights", tiny_weights, "--no-progress",
                     "--no-html", "--no-images", a, str(bad), "--output", str(tmp_path / "out2")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and "bad.jpg" in err
    rep2 = json.load(open(tmp_path / "out2" / "report.json"))
    assert [r["status"] for r in rep2["images"]] == ["ok", "error"]
    assert cardd_main(["assess", "--config-file", str(tmp_path / "missing.yaml"), a, "--output", out]) == 2


def test_custom_class_names_travel_with_the_model(tiny_config_file, save_tiny_weights, tmp_path, capsys):
    """A 6-class parts model saved with its names is reported with those names, not CarDD's."""
    parts = save_tiny_weights(PARTS, "parts.pth")
    img = save(rgb_image(h=60, w=90, seed=1), str(tmp_path / "in" / "a.jpg"))
    out = tmp_path / "out"
    base = ["assess", "--config-file", tiny_config_file, "--confidence-threshold", "0.0", "--no-progress", img]
    assert cardd_main(base + ["--weights", parts, "--output", str(out)]) == 0
    rep = json.load(open(out / "report.json"))
    assert rep["model"]["class_names"] == PARTS
    found = {d["class"] for d in rep["images"][0]["instances"]}
    assert found and found <= set(PARTS)
    html = open(out / "index.html", encoding="utf-8").read()
    assert any(f"{name}: score" in html for name in found) and "dent" not in html
    # names given explicitly replace the checkpoint's
    upper = ",".join(n.upper() for n in PARTS)
    assert cardd_main(base + ["--weights", parts, "--class-names", upper, "--output", str(tmp_path / "o2")]) == 0
    rep2 = json.load(open(tmp_path / "o2" / "report.json"))
    assert {d["class"] for d in rep2["images"][0]["instances"]} <= set(upper.split(","))
    # a checkpoint without names falls back to the config's dataset (cardd_test here) with a warning
    unnamed = save_tiny_weights(None, "unnamed.pth")
    assert cardd_main(base + ["--weights", unnamed, "--output", str(tmp_path / "o3")]) == 0
    assert json.load(open(tmp_path / "o3" / "report.json"))["model"]["class_names"][0] == "dent"
    # names and NUM_CLASSES disagree: refused before any inference, naming both
    capsys.readouterr()
    rc = cardd_main(base + ["--weights", parts, "--output", str(tmp_path / "o4"), "MODEL.ROI_HEADS.NUM_CLASSES", "5"])
    err = capsys.readouterr().err
    assert rc == 2 and parts in err and "MODEL.ROI_HEADS.NUM_CLASSES is 5" in err and "door" in err
    assert not (tmp_path / "o4").exists()


def test_inference_needs_readable_weights(tiny_config_file, tmp_path, capsys):
    img = save(rgb_image(), str(tmp_path / "a.jpg"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00not a checkpoint" * 50)
    cases = {(): ["--weights", "MODEL.WEIGHTS"],
             ("--weights", str(tmp_path / "nope.pth")): ["nope.pth", "not found"],
             ("--weights", str(junk)): [str(junk), "cannot be read"],
             ("MODEL.WEIGHTS", "mmdet://mask_rcnn_r50"): ["mmdet://mask_rcnn_r50", "--weights"]}
    for extra, words in cases.items():
        out = tmp_path / f"out{len(extra)}"
        rc = cardd_main(["assess", "--config-file", tiny_config_file, "--no-progress", img, "--output", str(out),
                         *extra])
        err = capsys.readouterr().err
        assert rc == 2 and all(w in err for w in words) and "Traceback" not in err, (extra, err)
        assert not out.exists()


def test_non_utf8_file_name_is_escaped_in_the_page(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    raw = os.path.join(os.fsencode(str(folder)), b"caf\xe9 \xff<b>.jpg")
    save(rgb_image(), os.fsdecode(raw))
    out = str(tmp_path / "out")
    rep = assess([str(folder)], FakePredictor(), output_dir=out, progress=False)
    assert [r["status"] for r in rep["images"]] == ["ok"]
    html = open(os.path.join(out, "index.html"), encoding="utf-8").read()
    assert "caf\\xe9 \\xff&lt;b&gt;.jpg" in html
    (link,) = re.findall(r"href='([^']*)'", html)
    assert os.path.isfile(os.path.join(os.fsencode(out), unquote_to_bytes(link)))
    assert json.load(open(os.path.join(out, "report.json")))["images"][0]["file"] == rep["images"][0]["file"]


def test_page_failure_keeps_the_results(tmp_path, monkeypatch):
    import cardd_d2.assessment.report as report_mod

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(report_mod, "write_html", broken)
    out = tmp_path / "out"
    rep = assess([save(rgb_image(), str(tmp_path / "a.jpg"))], FakePredictor(), output_dir=str(out), progress=False)
    on_disk = json.load(open(out / "report.json"))
    validate_report(on_disk)
    assert on_disk["summary"]["num_instances"] == 5 and "disk full" in on_disk["output_errors"][0]
    assert rep["output_errors"] == on_disk["output_errors"] and not (out / "index.html").exists()
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "report.json").mkdir()  # report.json cannot be written: a clear error naming it
    with pytest.raises(report_mod.ReportWriteError, match="report.json"):
        assess([str(tmp_path / "a.jpg")], FakePredictor(), output_dir=str(tmp_path / "blocked"), progress=False)


def test_page_wording(tmp_path):
    img = save(rgb_image(), str(tmp_path / "a.jpg"))
    info = {"config_file": "cfg.yaml", "weights": "parts.pth", "class_names": PARTS, "gate": None}
    out = tmp_path / "nothing"
    assess([img], FakePredictor(spec=[]), output_dir=str(out), progress=False, model_info=info,
           score_threshold=0.3, class_names=PARTS)
    html = open(out / "index.html", encoding="utf-8").read()
    assert "no damage detected" in html and ">ok<" not in html
    assert "parts.pth" in html and "cfg.yaml" in html and "0.3" in html and "gate" in html
    assert "P(damaged)" not in html  # no gate, no column
    out = tmp_path / "some"
    assess([img], FakePredictor(spec=[(0, 0.9)]), constant_gate(0.5), output_dir=str(out), progress=False,
           class_names=PARTS, model_info=dict(info, gate=constant_gate(0.5).describe()))
    html = open(out / "index.html", encoding="utf-8").read()
    assert "1 damage detected" in html and "door: score 0.90, size small, " in html and "% of the image area" in html
    assert "<th>P(damaged)</th>" in html and "<td>0.500</td>" in html and "P(undamaged) &gt; 0.9" in html
