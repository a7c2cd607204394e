#!/usr/bin/env python
"""Run (or resume) the experiments behind one of the CarDD paper's tables and render it next to the paper's numbers.

    python projects/CarDD_paper/run_table.py --table II  [--dry-run] [--output DIR] [--resume] [--num-gpus N]
                                             [--cardd-root DIR] [--train-dataset NAME] [--test-dataset NAME]
                                             [--only NAME ...] [--render-only] [--jobs N [--gpu-ids ID ...]]
                                             [KEY VALUE ...]

Tables
  II   DCN+ ablation on DCN R-101 (batch 4, lr 0.005): baseline / + multi-scale / + focal / + both (= DCN+).
  III  focal (alpha, gamma) grid on DCN+ R-101: 10 settings as config overrides.
  IV   mask AP of Mask R-CNN, Cascade Mask R-CNN, GCNet, HTC, DCN, DCN+ x R-50 / R-101 (12 runs, shared with V).
  V    box AP of the same 12 runs.
  VI   the more challenging setting: delegates to tools/challenging_setting.py with the DCN+ R-101 run of IV/V.

Every experiment is one ``tools/train_net.py`` subprocess (train, then evaluate the test split) with
OUTPUT_DIR = ``<output>/<group>/<experiment>``; its evaluator writes ``OUTPUT_DIR/inference/<test set>/results.json``.
With ``--resume`` an experiment whose results.json exists is skipped and an interrupted one continues from its last
checkpoint (train_net --resume). The table is written to ``<output>/table_<T>.md`` and printed.
Config overrides (detectron2 KEY VALUE pairs, anywhere among the flags) are appended to every experiment, after the
experiment's own.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from cardd_d2.evaluation import PAPER_RESULTS, load_results_json, render_main_table, render_per_class_table
from cardd_d2.tool_args import EXIT_STATUS_HELP, OVERRIDES_HELP, parse_args_with_overrides
from cardd_sod.data.layout import COCO_DIR, DATASET_NAMES, coco_split_files

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(REPO_ROOT, "configs", "CarDD")
TRAIN_NET = os.path.join(REPO_ROOT, "tools", "train_net.py")
CHALLENGING_TOOL = os.path.join(REPO_ROOT, "tools", "challenging_setting.py")

TABLES = ("II", "III", "IV", "V", "VI")
DEFAULT_TEST_DATASET = DATASET_NAMES["test"]


@dataclass
class Experiment:
    name: str  # folder name under the group
    label: str  # row label in the table
    config: str  # path relative to configs/CarDD
    opts: List[str] = field(default_factory=list)
    paper_key: Optional[str] = None  # key of cardd_d2.evaluation.PAPER_RESULTS with the published numbers


# ----------------------------------------------------------------------------------------------------- experiments
TABLE_II = [
    Experiment("baseline", "DCN R-101 (baseline)", "ablation/dcn_R_101_baseline.yaml"),
    Experiment("multiscale", "+ multi-scale", "ablation/dcn_R_101_multiscale.yaml"),
    Experiment("focal", "+ focal loss", "ablation/dcn_R_101_focal.yaml"),
    # + both is exactly DCN+ R-101, whose published numbers are Table IV/V's.
    Experiment("multiscale_focal", "+ multi-scale + focal loss (DCN+)", "ablation/dcn_R_101_multiscale_focal.yaml",
               paper_key="DCN+ R-101"),
]

TABLE_III_GRID = [(0.25, 1), (0.25, 2), (0.25, 3), (0.25, 5), (0.5, 1), (0.5, 2), (0.5, 3), (0.75, 0.5), (0.75, 1),
                  (0.75, 2)]


def _grid_experiment(alpha: float, gamma: float) -> Experiment:
    return Experiment(
        f"alpha{alpha:g}_gamma{gamma:g}",
        f"alpha={alpha:g}, gamma={gamma:g}",
        "dcn_plus_R_101_FPN.yaml",
        ["MODEL.ROI_BOX_HEAD.FOCAL_ALPHA", str(alpha), "MODEL.ROI_BOX_HEAD.FOCAL_GAMMA", str(gamma)],
        paper_key="DCN+ R-101" if (alpha, gamma) == (0.5, 2) else None,  # the released setting
    )


TABLE_III = [_grid_experiment(a, g) for a, g in TABLE_III_GRID]

MAIN_METHODS = [  # (paper name, config stem)
    ("Mask R-CNN", "mask_rcnn"),
    ("Cascade Mask R-CNN", "cascade_mask_rcnn"),
    ("GCNet", "gcnet"),
    ("HTC", "htc"),
    ("DCN", "dcn"),
    ("DCN+", "dcn_plus"),
]
TABLE_MAIN = [
    Experiment(f"{stem}_R_{depth}_FPN", f"{method} R-{depth}", f"{stem}_R_{depth}_FPN.yaml",
               paper_key=f"{method} R-{depth}")
    for method, stem in MAIN_METHODS
    for depth in ("50", "101")
]

GROUPS = {"II": "table_II", "III": "table_III", "IV": "main", "V": "main", "VI": "main"}
EXPERIMENTS: Dict[str, List[Experiment]] = {"II": TABLE_II, "III": TABLE_III, "IV": TABLE_MAIN, "V": TABLE_MAIN}


# ------------------------------------------------------------------------------------------------------- running
def experiment_dir(output: str, table: str, exp: Experiment) -> str:
    return os.path.join(output, GROUPS[table], exp.name)


def results_path(output_dir: str, test_dataset: str = DEFAULT_TEST_DATASET) -> str:
    """Where CarDDTrainer's evaluator writes the results of ``test_dataset`` (cardd_d2.engine.inference_dir)."""
    return os.path.join(output_dir, "inference", test_dataset, "results.json")


def _dataset_opts(train_dataset: Optional[str], test_dataset: Optional[str]) -> List[str]:
    opts = []
    if train_dataset:
        opts += ["DATASETS.TRAIN", f"('{train_dataset}',)"]
    if test_dataset:
        opts += ["DATASETS.TEST", f"('{test_dataset}',)"]
    return opts


def build_command(args, table: str, exp: Experiment, resume: bool) -> List[str]:
    config = os.path.join(CONFIG_DIR, exp.config)
    cmd = [args.python, args.train_net, "--config-file", config, "--num-gpus", str(args.num_gpus)]
    if resume:
        cmd.append("--resume")
    if args.cardd_root:
        cmd += ["--cardd-root", args.cardd_root]
    opts = list(exp.opts) + _dataset_opts(args.train_dataset, args.test_dataset) + list(args.extra_opts)
    opts += ["OUTPUT_DIR", experiment_dir(args.output, table, exp)]
    return cmd + opts


def _has_checkpoint(out_dir: str) -> bool:
    return os.path.isfile(os.path.join(out_dir, "last_checkpoint"))


def run_experiments(args, table: str, experiments: Sequence[Experiment]) -> Dict[str, str]:
    """Run every experiment (``args.jobs`` at a time); returns name -> status ("done", "skipped", "failed (...)",
    "dry-run"). With ``args.gpu_ids``, job slot k gets ``CUDA_VISIBLE_DEVICES=gpu_ids[k]``."""
    status: Dict[str, str] = {}
    test_ds = args.test_dataset or DEFAULT_TEST_DATASET
    pending = []
    for i, exp in enumerate(experiments, 1):
        out_dir = experiment_dir(args.output, table, exp)
        res = results_path(out_dir, test_ds)
        if args.resume and os.path.isfile(res):
            print(f"[{i}/{len(experiments)}] {exp.name}: results exist ({res}), skipped", flush=True)
            status[exp.name] = "skipped"
            continue
        cmd = build_command(args, table, exp, resume=args.resume and _has_checkpoint(out_dir))
        print(f"[{i}/{len(experiments)}] {exp.name}: {shlex.join(cmd)}", flush=True)
        if args.dry_run:
            status[exp.name] = "dry-run"
            continue
        pending.append((exp, out_dir, res, cmd))

    jobs = max(1, int(getattr(args, "jobs", 1) or 1))
    gpu_ids = list(getattr(args, "gpu_ids", None) or [])
    running = {}  # slot -> (exp, out_dir, res, proc, log, t0)
    while pending or running:
        for slot in range(jobs):
            if slot in running or not pending:
                continue
            exp, out_dir, res, cmd = pending.pop(0)
            os.makedirs(out_dir, exist_ok=True)
            env = dict(os.environ)
            if gpu_ids:
                env["CUDA_VISIBLE_DEVICES"] = str(gpu_ids[slot % len(gpu_ids)])
            log = open(os.path.join(out_dir, "run_table.log"), "a")
            out = None if args.verbose else log
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
            running[slot] = (exp, out_dir, res, proc, log, time.time())
        time.sleep(0.2)
        for slot, (exp, out_dir, res, proc, log, t0) in list(running.items()):
            rc = proc.poll()
            if rc is None:
                continue
            log.close()
            del running[slot]
            if rc == 0 and os.path.isfile(res):
                status[exp.name] = "done"
                print(f"    {exp.name}: done in {time.time() - t0:.0f} s -> {res}", flush=True)
            else:
                why = f"rc {rc}" if rc else f"no {res}"
                status[exp.name] = f"failed ({why})"
                print(f"    {exp.name}: FAILED ({why}); log: {os.path.join(out_dir, 'run_table.log')}",
                      file=sys.stderr, flush=True)
    return status


# ----------------------------------------------------------------------------------------------------- rendering
def collect_results(args, table: str, experiments: Sequence[Experiment]) -> Dict[str, Optional[dict]]:
    test_ds = args.test_dataset or DEFAULT_TEST_DATASET
    paths = {exp.label: results_path(experiment_dir(args.output, table, exp), test_ds) for exp in experiments}
    return {label: load_results_json(path) if os.path.isfile(path) else None for label, path in paths.items()}


def render_table(args, table: str, experiments: Sequence[Experiment]) -> str:
    rows = collect_results(args, table, experiments)
    paper = {e.label: PAPER_RESULTS[e.paper_key] for e in experiments if e.paper_key and e.paper_key in PAPER_RESULTS}
    tasks = {"IV": ("segm",), "V": ("bbox",)}.get(table, ("segm", "bbox"))
    titles = {
        "II": "Table II: DCN+ ablation on DCN R-101 (batch 4, lr 0.005)",
        "III": "Table III: focal loss (alpha, gamma) on DCN+ R-101",
        "IV": "Table IV: instance segmentation (mask AP)",
        "V": "Table V: object detection (box AP)",
    }
    ours = {k: (v or {}) for k, v in rows.items()}
    body = render_main_table(ours, paper, tasks=tasks)
    if table in ("IV", "V"):
        task = tasks[0]
        body += f"\nPer-class {'mask' if task == 'segm' else 'box'} AP\n\n"
        body += render_per_class_table(ours, paper, task=task, metric="AP")
    missing = [k for k, v in rows.items() if v is None]
    notes = [f"Results: {args.output}/{GROUPS[table]}/<experiment>/inference/"
             f"{args.test_dataset or DEFAULT_TEST_DATASET}/results.json; '(paper)' rows are the published numbers."]
    if table in ("II", "III"):
        notes.append("'(paper)' rows are filled where the published numbers are those of the released setting "
                     "(= DCN+ R-101 of Table IV/V); the other published cells of this table are not filled in.")
    if missing:
        notes.append("No results yet for: " + ", ".join(missing) + ".")
    return f"# {titles[table]}\n\n{body}\n" + "\n".join(notes) + "\n"


# -------------------------------------------------------------------------------------------------------- Table VI
def run_table_vi(args) -> int:
    """Table VI: tools/challenging_setting.py on the DCN+ R-101 model of Table IV/V."""
    dcn_plus = next(e for e in TABLE_MAIN if e.name == "dcn_plus_R_101_FPN")
    run_dir = experiment_dir(args.output, "IV", dcn_plus)
    weights = args.weights or os.path.join(run_dir, "model_final.pth")
    root = args.cardd_root or os.environ.get("CARDD_DATASETS")
    problems = []
    if not args.dry_run and not os.path.isfile(weights):
        problems.append(f"detector weights {weights} not found (run --table IV first or pass --weights)")
    if not root:
        problems.append("--cardd-root (or $CARDD_DATASETS) is needed to find CarDD_COCO/test2017")
    if not args.undamaged_dir:
        problems.append("--undamaged-dir (the 500 undamaged test images) is needed")
    if problems:
        raise SystemExit("Table VI: " + "; ".join(problems))
    test_json, test_images = coco_split_files(os.path.join(root, COCO_DIR), ["test"])["test"]
    cmd = [args.python, CHALLENGING_TOOL, "--config-file", os.path.join(CONFIG_DIR, dcn_plus.config),
           "--weights", weights,
           "--test-json", test_json,
           "--image-root", test_images, "--undamaged-dir", args.undamaged_dir,
           "--max-undamaged", "500", "--output", os.path.join(args.output, "table_VI")]
    if args.classifier_weights:
        cmd += ["--classifier-weights", args.classifier_weights]
    cmd += list(args.extra_opts)
    print(shlex.join(cmd), flush=True)
    if args.dry_run:
        return 0
    return subprocess.call(cmd, cwd=REPO_ROOT)


# -------------------------------------------------------------------------------------------------------------- CLI
def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=f"{OVERRIDES_HELP}; appended to every experiment.\n\n{EXIT_STATUS_HELP}",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", required=True, choices=TABLES)
    p.add_argument("--output", default=os.path.join(REPO_ROOT, "output", "CarDD_paper"))
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--resume", action="store_true",
                   help="skip experiments with results.json; continue interrupted ones from their last checkpoint")
    p.add_argument("--render-only", action="store_true", help="only render the table from existing results")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="run only these experiment names")
    p.add_argument("--num-gpus", type=int, default=1, help="GPUs per experiment (train_net --num-gpus)")
    p.add_argument("--jobs", type=int, default=1, help="experiments run at the same time")
    p.add_argument("--gpu-ids", nargs="+", default=None, metavar="ID",
                   help="with --jobs: CUDA_VISIBLE_DEVICES of each job slot (e.g. --jobs 4 --gpu-ids 0 1 2 3)")
    p.add_argument("--cardd-root", default=None, help="folder holding CarDD_COCO (default: $CARDD_DATASETS)")
    p.add_argument("--train-dataset", default=None, help="override DATASETS.TRAIN (a registered dataset name)")
    p.add_argument("--test-dataset", default=None, help=f"override DATASETS.TEST (default {DEFAULT_TEST_DATASET})")
    p.add_argument("--python", default=sys.executable, help="interpreter for the subprocesses")
    p.add_argument("--train-net", default=TRAIN_NET, help="training script (detectron2-style arguments)")
    p.add_argument("--verbose", action="store_true", help="show subprocess output instead of logging it")
    p.add_argument("--weights", default=None, help="Table VI: detector weights (default: the DCN+ R-101 run)")
    p.add_argument("--classifier-weights", default=None, help="Table VI: damaged/undamaged classifier checkpoint")
    p.add_argument("--undamaged-dir", default=None, help="Table VI: folder of undamaged test images")
    return p


def list_experiments(table: str, only: Optional[Sequence[str]] = None) -> List[Experiment]:
    exps = EXPERIMENTS[table]
    if only:
        unknown = set(only) - {e.name for e in exps}
        if unknown:
            raise SystemExit(f"--only: unknown experiment(s) {sorted(unknown)} for table {table}; "
                             f"choose from {[e.name for e in exps]}")
        exps = [e for e in exps if e.name in only]
    return exps


def main(argv=None) -> int:
    args = parse_args_with_overrides(get_parser(), argv, dest="extra_opts")
    args.output = os.path.abspath(args.output)
    if args.table == "VI":
        return run_table_vi(args)
    experiments = list_experiments(args.table, args.only)
    status = {}
    if not args.render_only:
        missing = [e.config for e in experiments if not os.path.isfile(os.path.join(CONFIG_DIR, e.config))]
        if missing:
            raise SystemExit(f"config file(s) not found under {CONFIG_DIR}: {missing}")
        status = run_experiments(args, args.table, experiments)
    if args.dry_run:
        return 0
    text = render_table(args, args.table, list_experiments(args.table))
    os.makedirs(args.output, exist_ok=True)
    out_md = os.path.join(args.output, f"table_{args.table}.md")
    with open(out_md, "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    print(f"written to {out_md}")
    failed = {k: v for k, v in status.items() if v.startswith("failed")}
    if failed:
        print(f"{len(failed)} experiment(s) failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
