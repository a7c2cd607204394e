"""Smoke test: CarDDTrainer.test with a tiny random-init Mask R-CNN evaluates through CarDDEvaluator."""
import json
import os
import uuid

from detectron2.data import DatasetCatalog, MetadataCatalog


def test_trainer_test_writes_results(synthetic_cardd, tiny_cfg):
    from cardd_d2.data import register_coco_damage
    from cardd_d2.engine.trainer import CarDDTrainer

    name = f"cardd_eval_model_{uuid.uuid4().hex[:8]}"
    register_coco_damage(name, synthetic_cardd["json"]["test"], synthetic_cardd["image_dirs"]["test"])
    try:
        cfg = tiny_cfg("CarDD/mask_rcnn_R_50_FPN.yaml", "DATASETS.TEST", f"('{name}',)",
                       "TEST.EVALUATOR.METHOD_NAME", "tiny-mrcnn", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")
        model = CarDDTrainer.build_model(cfg)
        results = CarDDTrainer.test(cfg, model)
        for task in ("bbox", "segm"):
            r = results[task]
            assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "coco_APs", "AP-dent", "AP50-tire flat"} <= set(r)
            assert all(isinstance(v, float) for v in r.values())
        out = os.path.join(cfg.OUTPUT_DIR, "inference", name)
        saved = json.load(open(os.path.join(out, "results.json")))
        assert set(saved) >= {"bbox", "segm", "meta"}
        md = open(os.path.join(out, "results.md")).read()
        assert "| tiny-mrcnn |" in md
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
