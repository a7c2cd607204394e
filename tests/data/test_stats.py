"""Dataset statistics (library + tools/dataset_stats.py) on a hand-made json and on synthetic data."""
import json
import os

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from cardd_d2.data import register_coco_damage
from cardd_d2.data.stats import dataset_stats, stats_from_coco_json, stats_from_dataset_dicts, write_dataset_stats
from cardd_d2.data.synthetic import make_synthetic_cardd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _square(x, y, s):
    return [[x, y, x + s, y, x + s, y + s, x, y + s]]


@pytest.fixture
def toy_json(tmp_path):
    """3 images (one without instances), classes ids 7 'a' and 3 'b'; areas chosen per bucket."""
    images = [{"id": 1, "file_name": "1.jpg", "width": 1000, "height": 413},
              {"id": 2, "file_name": "2.jpg", "width": 800, "height": 600},
              {"id": 3, "file_name": "3.jpg", "width": 1200, "height": 900}]
    anns = []
    for k, (img, cat, side) in enumerate([(1, 7, 10), (1, 7, 200), (2, 7, 300), (2, 3, 127), (2, 3, 128)]):
        anns.append({"id": k + 1, "image_id": img, "category_id": cat, "iscrowd": 0, "area": float(side * side),
                     "bbox": [0, 0, side, side], "segmentation": _square(0, 0, side)})
    cats = [{"id": 7, "name": "a"}, {"id": 3, "name": "b"}]
    path = tmp_path / "toy.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return str(path)


def test_counts_buckets_sizes_resolution(toy_json):
    s = stats_from_coco_json(toy_json, bin_width=100)
    assert s["classes"] == ["b", "a"]  # json id order
    assert s["num_images"] == 3 and s["num_instances"] == 5 and s["num_images_without_instances"] == 1
    assert s["instances_per_class"] == {"b": 2, "a": 3}
    pc = s["size_buckets"]["per_class"]
    assert {k: v["count"] for k, v in pc["a"].items()} == {"small": 1, "medium": 1, "large": 1}
    assert {k: v["count"] for k, v in pc["b"].items()} == {"small": 1, "medium": 1, "large": 0}
    assert pc["b"]["small"]["share"] == pytest.approx(0.5)
    assert s["object_size"]["bin_edges"] == [0.0, 100.0, 200.0, 300.0, 400.0]
    assert s["object_size"]["per_class"]["a"]["histogram"] == [1, 0, 1, 1]
    assert s["object_size"]["per_class"]["b"]["histogram"] == [0, 2, 0, 0]
    assert s["object_size"]["per_class"]["a"]["max"] == pytest.approx(300.0)
    r = s["image_resolution"]
    assert r["smallest_image"] == [1000, 413] and r["largest_image"] == [1200, 900]
    assert r["min_width"] == 800 and r["max_height"] == 900
    assert r["mean_pixels"] == pytest.approx((413000 + 480000 + 1080000) / 3)
    assert s["instances_per_image"]["histogram"] == {"0": 1, "2": 1, "3": 1}


def test_registered_name_and_dataset_dicts_agree(toy_json, tmp_path):
    name = "test_stats_toy"
    register_coco_damage(name, toy_json, str(tmp_path), check_images=False)
    try:
        by_name = dataset_stats(name, bin_width=100)
        meta = MetadataCatalog.get(name)
        dicts = [dict(d) for d in json.load(open(toy_json))["images"]]
        raw = json.load(open(toy_json))
        id_map = meta.thing_dataset_id_to_contiguous_id
        for d in dicts:
            d["annotations"] = [{"category_id": id_map[a["category_id"]], "segmentation": a["segmentation"],
                                 "bbox": a["bbox"], "bbox_mode": 1, "iscrowd": 0}
                                for a in raw["annotations"] if a["image_id"] == d["id"]]
        from_dicts = stats_from_dataset_dicts(dicts, meta.thing_classes, bin_width=100)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert by_name["dataset"] == name
    for key in ("instances_per_class", "size_buckets", "image_resolution"):
        assert by_name[key] == from_dicts[key]
    with pytest.raises(KeyError, match="neither a registered dataset"):
        dataset_stats("no_such_dataset_xyz")


def test_write_outputs(toy_json, tmp_path):
    paths = write_dataset_stats(stats_from_coco_json(toy_json), str(tmp_path / "out"), prefix="toy_")
    assert set(paths) == {"json", "class_counts", "size_buckets", "object_sizes", "image_resolution"}
    for p in paths.values():
        assert os.path.getsize(p) > 0
    with open(paths["json"]) as f:
        assert json.load(f)["num_instances"] == 5
    for p in list(paths.values())[1:]:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def _load_tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("dataset_stats_tool", os.path.join(REPO, "tools", "dataset_stats.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_on_synthetic_cardd(tmp_path, monkeypatch, capsys):
    info = make_synthetic_cardd(str(tmp_path / "d"), num_images=(3, 1, 1), image_size=(256, 192), write_sod=False)
    out = tmp_path / "out"
    tool = _load_tool()
    # --cardd-root (re)registers the cardd_* names; restore any earlier registration afterwards
    saved = {n: (DatasetCatalog[n], MetadataCatalog.get(n).as_dict()) for n in ("cardd_train", "cardd_val",
                                                                                "cardd_test") if n in DatasetCatalog}
    try:
        paths = tool.main(["--dataset", "cardd_train", "cardd_val", "--cardd-root", info["root"], "--output",
                           str(out)])
    finally:
        for n in ("cardd_train", "cardd_val", "cardd_test"):
            if n in DatasetCatalog:
                DatasetCatalog.remove(n)
                MetadataCatalog.remove(n)
            if n in saved:
                meta = dict(saved[n][1])
                meta.pop("name", None)
                DatasetCatalog.register(n, saved[n][0])
                MetadataCatalog.get(n).set(**meta)
        from cardd_d2.data import datasets as ds_mod

        for n in ("cardd_train", "cardd_val", "cardd_test"):
            ds_mod._REGISTERED.pop(n, None)
    assert set(paths) == {"cardd_train", "cardd_val"}
    with open(out / "cardd_train_stats.json") as f:
        s = json.load(f)
    with open(info["json"]["train"]) as f:
        coco = json.load(f)
    assert s["num_images"] == 3 and s["num_instances"] == len(coco["annotations"])
    assert (out / "cardd_val_size_buckets.png").is_file()
    assert "cardd_train: 3 images" in capsys.readouterr().out
    tool.main(["--json", info["json"]["test"], "--output", str(out), "--no-plots"])
    assert (out / "instances_test2017_stats.json").is_file()
    assert not (out / "instances_test2017_size_buckets.png").exists()
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--json", str(tmp_path / "missing.json"), "--output", str(out)])
    assert exit_info.value.code == 1 and "missing.json" in capsys.readouterr().err


def test_cli_json_files_sharing_a_base_name_do_not_overwrite(tmp_path, toy_json, capsys):
    """a/train/instances.json and b/train/instances.json: two sets of outputs, each with its own numbers."""
    with open(toy_json) as f:
        coco = json.load(f)
    paths = []
    for folder, n_ann in (("a", 5), ("b", 2)):
        d = tmp_path / folder / "train"
        d.mkdir(parents=True)
        paths.append(str(d / "instances.json"))
        (d / "instances.json").write_text(json.dumps(dict(coco, annotations=coco["annotations"][:n_ann])))
    out = tmp_path / "out"
    results = _load_tool().main(["--json"] + paths + ["--output", str(out), "--no-plots"])
    assert list(results) == ["a_train_instances", "b_train_instances"]
    for name, n_ann in (("a_train_instances", 5), ("b_train_instances", 2)):
        with open(out / f"{name}_stats.json") as f:
            assert json.load(f)["num_instances"] == n_ann
    assert sorted(os.listdir(out)) == ["a_train_instances_stats.json", "b_train_instances_stats.json"]
    with pytest.raises(SystemExit) as exit_info:  # the same file twice is a usage error
        _load_tool().main(["--json", paths[0], paths[0], "--output", str(out)])
    assert exit_info.value.code == 2 and "more than once" in capsys.readouterr().err
