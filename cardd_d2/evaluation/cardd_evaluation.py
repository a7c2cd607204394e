"""CarDDEvaluator: detectron2's COCOEvaluator with CarDD's size buckets, per-class AP/AP50 and paper tables.

Collection of predictions (``process``), conversion to COCO results and gathering across workers are
detectron2's; the metrics come from :mod:`cardd_d2.evaluation.coco_metrics` (pycocotools COCOeval).
"""
from __future__ import annotations

import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from tabulate import tabulate

from .coco_metrics import TASKS, evaluate_coco_api, resolve_area_ranges
from .tables import write_results

__all__ = ["CarDDEvaluator", "build_cardd_evaluator"]

logger = logging.getLogger(__name__)


class CarDDEvaluator(COCOEvaluator):
    """Box and mask AP with CarDD's size buckets (small < 128², medium 128²–256², large ≥ 256²).

    Results per task ("bbox", "segm"), in percent: AP, AP50, AP75, APs, APm, APl (CarDD buckets),
    coco_APs, coco_APm, coco_APl (COCO's 32²/96² buckets, when ``report_coco_sizes``), AP-<class> and
    AP50-<class>. Undefined values (no ground truth for a class or a bucket) are NaN. With an ``output_dir``,
    also writes results.json, results.md (paper-layout tables) and detectron2's coco_instances_results.json.
    """

    def __init__(
        self,
        dataset_name: str,
        tasks: Optional[Sequence[str]] = ("bbox", "segm"),
        distributed: bool = True,
        output_dir: Optional[str] = None,
        report_coco_sizes: bool = True,
        *,
        area_ranges="cardd",
        max_dets_per_image: Optional[int] = None,
        use_fast_impl: bool = False,
        method_name: str = "ours",
        allow_cached_coco: bool = True,
    ):
        """
        Args:
            dataset_name: a registered detectron2 dataset (COCO json or any dataset detectron2 can convert).
            tasks: subset of ("bbox", "segm"); None infers them from the predictions.
            distributed: gather predictions from all workers and evaluate on the main one.
            output_dir: where results.json / results.md and the raw predictions go (None: nothing written).
            report_coco_sizes: also report COCO's size APs under the "coco_" prefix.
            area_ranges: "cardd" (default), "coco" or four [lo, hi] pairs (all, small, medium, large).
            max_dets_per_image: detections per image kept by COCOeval (default 100).
            use_fast_impl: use detectron2's compiled COCOeval_opt when importable; default pycocotools.
            method_name: row label in results.md.
        """
        if tasks is not None:
            tasks = tuple(tasks)
            unknown = [t for t in tasks if t not in TASKS]
            if unknown:
                raise ValueError(f"CarDDEvaluator: unknown task(s) {unknown}; expected a subset of {TASKS}")
        super().__init__(
            dataset_name,
            tasks=tasks,
            distributed=distributed,
            output_dir=output_dir,
            max_dets_per_image=max_dets_per_image,
            use_fast_impl=False,  # the metric code below picks its COCOeval implementation itself
            allow_cached_coco=allow_cached_coco,
        )
        self._dataset_name = dataset_name
        self._area_ranges = resolve_area_ranges(area_ranges)
        self._report_coco_sizes = bool(report_coco_sizes)
        self._cardd_max_dets = int(max_dets_per_image or 100)
        self._cardd_fast = bool(use_fast_impl)
        self._method_name = method_name
        self._dataset_to_contiguous = self._id_mapping()
        self._class_names = self._names_by_dataset_id()

    # ------------------------------------------------------------------ category bookkeeping
    def _id_mapping(self) -> Dict[int, int]:
        """dataset category id -> contiguous id (identity when the dataset was converted by detectron2)."""
        mapping = self._metadata.get("thing_dataset_id_to_contiguous_id", None)
        if mapping is not None:
            mapping = {int(k): int(v) for k, v in mapping.items()}
            if sorted(mapping.values()) != list(range(len(mapping))):
                raise ValueError(
                    f"dataset '{self._dataset_name}': thing_dataset_id_to_contiguous_id values must be 0..N-1, "
                    f"got {sorted(mapping.values())}"
                )
            return mapping
        classes = self._metadata.get("thing_classes", None)
        if classes is None:
            return {c: c for c in self._coco_api.getCatIds()}
        return {i: i for i in range(len(classes))}

    def _names_by_dataset_id(self) -> Dict[int, str]:
        gt_names = {c["id"]: c["name"] for c in self._coco_api.loadCats(self._coco_api.getCatIds())}
        classes = self._metadata.get("thing_classes", None)
        names = OrderedDict()
        for ds_id in sorted(gt_names):
            contiguous = self._dataset_to_contiguous.get(ds_id)
            if classes is not None and contiguous is not None and contiguous < len(classes):
                names[ds_id] = classes[contiguous]
            else:
                names[ds_id] = gt_names[ds_id]
        return names

    def _to_dataset_ids(self, coco_results: List[dict]) -> None:
        reverse = {v: k for k, v in self._dataset_to_contiguous.items()}
        for r in coco_results:
            c = r["category_id"]
            if c not in reverse:
                raise ValueError(
                    f"CarDDEvaluator on '{self._dataset_name}': a prediction has class {c}, but the dataset has "
                    f"{len(reverse)} classes (contiguous ids 0..{len(reverse) - 1})"
                )
            r["category_id"] = reverse[c]

    # ------------------------------------------------------------------ evaluation
    def _eval_predictions(self, predictions, img_ids=None):
        coco_results = list(itertools.chain(*[x.get("instances", []) for x in predictions]))
        self._to_dataset_ids(coco_results)
        tasks = self._tasks or self._tasks_from_predictions(coco_results)

        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            path = os.path.join(self._output_dir, "coco_instances_results.json")
            with PathManager.open(path, "w") as f:
                f.write(json.dumps(coco_results))

        if not self._do_evaluation:
            self._logger.info("CarDDEvaluator: the ground truth has no annotations; nothing to evaluate.")
            return
        if not coco_results:
            self._logger.warning("CarDDEvaluator: the model made no detections; AP is 0 wherever ground truth exists.")

        for task in sorted(tasks):
            res = evaluate_coco_api(
                self._coco_api,
                coco_results,
                tasks=[task],
                area_ranges=self._area_ranges,
                report_coco_sizes=self._report_coco_sizes,
                class_names=self._class_names,
                max_dets_per_image=self._cardd_max_dets,
                img_ids=img_ids,
                use_fast_impl=self._cardd_fast,
                source=f"predictions on '{self._dataset_name}'",
            )[task]
            self._log_task(task, res)
            self._results[task] = res

    def _log_task(self, task: str, res: Dict[str, float]) -> None:
        overall = [(k, v) for k, v in res.items() if "-" not in k]
        per_class = [(k[3:], v, res.get("AP50-" + k[3:])) for k, v in res.items() if k.startswith("AP-")]
        self._logger.info(
            f"CarDD {task} results (sizes 128²/256²):\n"
            + tabulate([[f"{v:.3f}" for _, v in overall]], headers=[k for k, _ in overall], tablefmt="pipe")
        )
        if per_class:
            self._logger.info(
                f"Per-class {task} AP:\n"
                + tabulate(
                    [[n, f"{a:.3f}", f"{b:.3f}"] for n, a, b in per_class],
                    headers=["class", "AP", "AP50"],
                    tablefmt="pipe",
                )
            )

    def evaluate(self, img_ids=None):
        results = super().evaluate(img_ids=img_ids)
        if results and self._output_dir and comm.is_main_process():
            paths = write_results(
                results,
                self._output_dir,
                method=self._method_name,
                meta={
                    "dataset": self._dataset_name,
                    "area_ranges": self._area_ranges,
                    "area_range_labels": ["all", "small", "medium", "large"],
                    "max_dets_per_image": self._cardd_max_dets,
                },
            )
            self._logger.info(f"CarDDEvaluator: wrote {paths['json']} and {paths['md']}")
        return results


def build_cardd_evaluator(cfg, dataset_name: str, output_dir: Optional[str] = None, distributed: bool = True):
    """A CarDDEvaluator configured from ``cfg.TEST.EVALUATOR`` (tasks from MODEL.MASK_ON)."""
    ev = cfg.TEST.EVALUATOR
    tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
    area = ev.AREA_RANGES
    if not isinstance(area, str):
        area = [list(r) for r in area]
    return CarDDEvaluator(
        dataset_name,
        tasks=tasks,
        distributed=distributed,
        output_dir=output_dir,
        report_coco_sizes=ev.REPORT_COCO_SIZES,
        area_ranges=area,
        max_dets_per_image=ev.MAX_DETS_PER_IMAGE,
        use_fast_impl=ev.USE_FAST_IMPL,
        method_name=ev.METHOD_NAME or "ours",
    )
