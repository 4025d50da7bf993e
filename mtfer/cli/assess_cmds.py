"""`mtfer evaluate` and `mtfer calibrate`: a model scored on a data set, and its confidences calibrated."""

from __future__ import annotations

import argparse

from mtfer.cli.data_cmds import parse_datasets
from mtfer.core import quiet


def format_metrics(metrics: dict) -> str:
    """Per task: accuracy, macro-F1 and the number of labelled faces, then recall and support per class."""
    lines = []
    for task, m in metrics["tasks"].items():
        if not m.get("n"):
            lines.append(f"{task}: no labelled faces")
            continue
        lines.append(f"{task}: accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  ({m['n']:,} faces)")
        width = max(len("class"), *(len(c) for c in m["classes"]))
        lines.append(f"  {'class':<{width}}  recall  support")
        for name in m["classes"]:
            c = m["per_class"][name]
            recall = "   n/a" if c["recall"] is None or not c["support"] else f"{c['recall']:6.3f}"
            lines.append(f"  {name:<{width}}  {recall}  {c['support']:7,}")
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mtfer.assess.evaluation import evaluate_dataset
    from mtfer.cli.progress import TextProgress

    result, out_dir = evaluate_dataset(
        args.model,
        args.format,
        args.data,
        args.split,
        out_dir=args.out,
        runs_dir=args.runs,
        progress=TextProgress(f"framing the {args.split} faces" if args.split != "all" else "framing the faces"),
        predict_progress=TextProgress("running the network"),
    )
    print(format_metrics(result.metrics))
    print(f"evaluation saved in {out_dir}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from mtfer.core import bundles

    path = bundles.resolve_model(args.model, args.runs)  # a bad --model fails here, before TensorFlow starts
    if path.resolve() == bundles.DEFAULT_BUNDLE.resolve():  # installed or checked out, it is everyone's
        raise bundles.RunError(
            "the shipped model is never changed: copy its folder (or train a run) and calibrate that with --model"
        )
    quiet.import_tensorflow()
    from mtfer.cli.progress import TextProgress
    from mtfer.core.bundles import METRICS_FILE
    from mtfer.train.finalize import calibrate_bundle

    result = calibrate_bundle(
        path,
        runs_dir=args.runs,
        datasets=parse_datasets(args.dataset) if args.dataset else None,
        evaluate=not args.no_evaluate,
        progress=TextProgress("framing the faces"),
    )
    section = result.calibration
    print(f"calibrated {result.path} on its {section['faces']:,} validation faces")
    for task, temperature in section["temperature"].items():
        before, after = section["ece_before"][task], section["ece_after"][task]
        ece = "no labelled faces" if before is None else f"ECE {before:.2%} -> {after:.2%}"
        note = "" if section["n"][task] >= 20 else " (too few faces to fit: left at 1)"
        print(f"  {task}: temperature {temperature:.3f}, {ece} on {section['n'][task]:,} faces{note}")
    if result.abstain:
        shown = ", ".join(f"{t} {a['min_confidence']:.2f}" for t, a in result.abstain.items())
        print(f'"not sure" below: {shown} (recomputed on the calibrated validation probabilities)')
    for folder in result.evaluations:
        tasks = bundles.read_json(folder / METRICS_FILE)["tasks"]
        parts = [
            f"{t} accuracy {m['accuracy']:.4f}, ECE {m['ece']:.2%} (before {m.get('ece_uncalibrated', m['ece']):.2%})"
            for t, m in tasks.items()
            if m.get("n")
        ]
        print(f"{folder.name}: " + "; ".join(parts))
    if result.evaluations:
        print(f"evaluations saved in {result.evaluations[0].parent}")
    print(f"stored in {result.path / bundles.METADATA_FILE} (calibration, abstain)")
    return 0
