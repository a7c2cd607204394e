"""The ``cardd`` commands (parsing and ``--help`` live in the top-level ``cardd_cli`` module, which imports this one
only when a command runs)."""
from __future__ import annotations

import os
import sys


def _load(args):
    from cardd_d2.assessment.gate import DamageGate
    from cardd_d2.assessment.predictor import get_metadata, setup_cfg, setup_export_cfg

    if args.export:
        from cardd_d2.export.runtime import RUNTIMES, load_export_info

        fmt = load_export_info(args.export)["format"]
        if args.runtime not in RUNTIMES[fmt]:
            raise ValueError(f"{args.export} holds a {fmt} export, which runs on --runtime "
                             f"{' or '.join(RUNTIMES[fmt])}, not {args.runtime}")
        if args.device not in (None, "cpu"):
            raise ValueError(f"exported models run on the CPU here (--device {args.device} given)")
        cfg = setup_export_cfg(args.export, opts=args.opts, confidence_threshold=args.confidence_threshold,
                               classifier_weights=args.classifier_weights, discard_threshold=args.discard_threshold,
                               class_names=args.class_names)
    else:
        cfg = setup_cfg(args.config_file, weights=args.weights, opts=args.opts, device=args.device,
                        confidence_threshold=args.confidence_threshold, classifier_weights=args.classifier_weights,
                        discard_threshold=args.discard_threshold, class_names=args.class_names)
    gate = DamageGate.from_config(cfg)
    meta = get_metadata(cfg)
    info = {"config_file": args.config_file, "weights": cfg.MODEL.WEIGHTS, "class_names": list(meta.thing_classes),
            "gate": gate.describe() if gate else None, "runtime": args.runtime}
    if args.export:
        from cardd_d2.export.runtime import load_export_info

        info["export"] = args.export
        info["config_file"] = os.path.join(args.export, load_export_info(args.export)["config"])
    return cfg, gate, meta, info


def _export_runtime(args):
    return args.runtime if args.export else None


def cmd_assess(args, cfg, gate, meta, info) -> int:
    from cardd_d2.assessment.predictor import build_predictor
    from cardd_d2.assessment.report import ReportWriteError, assess

    predictor = build_predictor(cfg, export_dir=args.export, runtime=_export_runtime(args))
    try:
        report = assess(args.inputs, predictor, gate, metadata=meta, output_dir=args.output,
                        score_threshold=args.confidence_threshold, with_polygons=args.polygons,
                        save_images=not args.no_images, write_html_page=not args.no_html, max_side=args.max_side,
                        progress=not args.no_progress, model_info=info)
    except ReportWriteError as e:
        print(f"cardd assess: error: {e}", file=sys.stderr)
        return 2
    s = report["summary"]
    print(f"assessed {s['num_inputs']} inputs: {s['num_ok']} ok, {s['num_discarded']} discarded by the gate, "
          f"{s['num_skipped']} skipped, {s['num_failed']} failed; {s['num_instances']} damages -> {args.output}")
    for r in report["images"]:
        if r["status"] == "error":
            print(f"FAILED {r['file']}: {r['reason']}", file=sys.stderr)
    for problem in report.get("write_errors", []):
        print(f"WARNING {problem}", file=sys.stderr)
    return 1 if s["num_failed"] else 0


def cmd_serve(args, cfg, gate, meta, info) -> int:
    import uvicorn

    from cardd_d2.assessment.predictor import build_predictor
    from cardd_d2.assessment.service import create_app

    app = create_app(lambda: build_predictor(cfg, export_dir=args.export, runtime=_export_runtime(args)), gate=gate,
                     max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                     workers=args.workers, queue_size=args.queue_size, request_timeout_s=args.request_timeout,
                     class_names=list(meta.thing_classes), score_threshold=args.confidence_threshold,
                     max_side=args.max_side, model_info=info)
    uvicorn.run(app, host=args.host, port=args.port)
    return 0


def cmd_export(args) -> int:
    from cardd_d2.assessment.predictor import setup_cfg
    from cardd_d2.export import ExportError, export_model
    from cardd_d2.export.exporter import check_exportable

    try:
        cfg = setup_cfg(args.config_file, weights=args.weights, opts=args.opts, device="cpu",
                        confidence_threshold=args.confidence_threshold, class_names=args.class_names)
        check_exportable(cfg, args.format, args.opset)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"cardd export: error: {e}", file=sys.stderr)
        return 2
    try:
        info = export_model(cfg, args.output, args.format, opset=args.opset, source_config_file=args.config_file)
    except ExportError as e:
        print(f"cardd export: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  (tracing / ONNX conversion / writing: say so, exit 1)
        print(f"cardd export: error: exporting {args.config_file} to {args.format} failed: {type(e).__name__}: {e}",
              file=sys.stderr)
        return 1
    print(f"exported {args.format} ({len(info['class_names'])} classes: {', '.join(info['class_names'])}) -> "
          f"{args.output}/{info['file']}")
    return 0


def run(args) -> int:
    """Run the parsed ``cardd assess`` / ``cardd serve`` / ``cardd export`` command; the exit status (see
    ``cardd --help``)."""
    if args.command == "export":
        return cmd_export(args)
    try:
        loaded = _load(args)
    except (FileNotFoundError, ValueError, KeyError) as e:
        # Bad config/weights paths, config keys or class names: a clear message, not a traceback.
        print(f"cardd {args.command}: error: {e}", file=sys.stderr)
        return 2
    return (cmd_assess if args.command == "assess" else cmd_serve)(args, *loaded)
