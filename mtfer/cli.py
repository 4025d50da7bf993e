"""The `mtfer` command: inspect, prepare, train, evaluate, predict, runs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _data_args(p: argparse.ArgumentParser) -> None:
    from mtfer.datasets import FORMATS

    p.add_argument("--format", required=True, choices=FORMATS, help="data set layout")
    p.add_argument("--data", required=True, help="data set folder (or CSV file for fer2013-csv)")


def cmd_inspect(args: argparse.Namespace) -> int:
    from mtfer.datasets import format_summary, read_dataset, summarize

    df, report = read_dataset(args.format, args.data)
    summary = summarize(df, report)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from mtfer.datasets.cache import TextProgress, prepare
    from mtfer.faces import PreprocessConfig

    prepared = prepare(
        args.format,
        args.data,
        config=PreprocessConfig(size=args.size),
        workers=args.workers,
        progress=TextProgress(),
        limit=args.limit,
        rebuild=args.rebuild,
    )
    print(f"{prepared.name}: {len(prepared.images)} faces prepared")
    print(json.dumps(prepared.report, indent=2, default=str))
    return 0


def _parse_datasets(items: list[str]) -> list[dict]:
    out = []
    for item in items:
        fmt, sep, root = item.partition("=")
        if not sep or not root:
            raise ValueError(f"--dataset takes FORMAT=DIR (e.g. fer2013=../shared/data/fer2013), got {item!r}")
        out.append({"format": fmt, "root": str(Path(root).resolve())})
    return out


def _parse_weights(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    weights = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"--loss-weights takes task=value pairs (emotion=2,age=4,...), got {part!r}")
        weights[name.strip()] = float(value)
    return weights


def cmd_train(args: argparse.Namespace) -> int:
    from mtfer import runs, training

    if args.resume:
        folder = runs.resolve_model(args.resume, args.runs)
        config = training.TrainConfig.from_dict(runs.read_json(folder / runs.CONFIG_FILE))
        training.setup_logging(folder)
        training.train(config, folder, resume=True)
        return 0
    if args.config:
        config = training.TrainConfig.from_dict(runs.read_json(args.config))
    else:
        fields: dict = {"datasets": _parse_datasets(args.dataset or [])}
        for name in (
            "architecture",
            "learning_rate",
            "batch_size",
            "epochs",
            "protocol",
            "seed",
            "precision",
        ):
            if getattr(args, name) is not None:
                fields[name] = getattr(args, name)
        for name in ("strategy", "limit", "steps_per_epoch", "init_from", "name"):
            if getattr(args, name) is not None:
                fields[name] = getattr(args, name)
        if args.single_task:
            fields["tasks"] = ["emotion"]
        elif args.tasks:
            fields["tasks"] = [t.strip() for t in args.tasks.split(",")]
        if args.no_augment:
            fields["augment"] = False
        if (weights := _parse_weights(args.loss_weights)) is not None:
            fields["loss_weights"] = {**training.TrainConfig().loss_weights, **weights}
        config = training.TrainConfig(**fields)
    if args.background:
        folder = runs.start_job(config.to_dict(), args.runs)
        print(f"started {folder.name} in the background (pid {runs.read_progress(folder).get('pid')})")
        return 0
    folder = (
        Path(args.run_dir) if args.run_dir else runs.run_dir(config.run_id or runs.new_run_id(config.name), args.runs)
    )
    training.setup_logging(folder)
    training.train(config, folder)
    metadata = runs.read_json(folder / runs.METADATA_FILE) if (folder / runs.METADATA_FILE).exists() else {}
    print(f"run {folder}")
    print(json.dumps(metadata.get("metrics", {}), indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mtfer.evaluation import evaluate_dataset

    result, out_dir = evaluate_dataset(
        args.model, args.format, args.data, args.split, out_dir=args.out, runs_dir=args.runs
    )
    for task, m in result.metrics["tasks"].items():
        acc = "n/a" if m["accuracy"] is None else f"{m['accuracy']:.4f}"
        print(f"{task:8s} accuracy {acc}  (n={m['n']})")
    print(f"wrote {out_dir}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from mtfer.faces import ImageError, decode_image

    decoded, failed = [], 0
    for image in args.images:  # decode first: a bad file is reported before TensorFlow is even imported
        try:
            decoded.append((image, decode_image(Path(image).read_bytes())))
        except (ImageError, OSError) as exc:
            failed += 1
            print(f"mtfer: error: {image}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
    if not decoded:
        return 1

    from mtfer.inference import Predictor

    predictor = Predictor(args.model)
    outputs = []
    for (image, _array), preds in zip(
        decoded, predictor.predict_images([a for _, a in decoded], largest_only=args.largest), strict=True
    ):
        outputs.append({"image": image, "faces": [p.to_dict() for p in preds]})
        if not args.json:
            print(f"{image}: {len(preds)} face(s)")
            for k, p in enumerate(preds, start=1):
                tops = ", ".join(f"{t} {p.top(t)[0]} ({p.top(t)[1]:.0%})" for t in p.probabilities)
                print(f"  face {k} at {p.box}: {tops}")
    if args.json:
        print(json.dumps(outputs[0] if len(args.images) == 1 else outputs, indent=2))
    return 1 if failed else 0


def cmd_runs(args: argparse.Namespace) -> int:
    from mtfer import runs

    if args.activate:
        runs.set_active_model(runs.resolve_model(args.activate, args.runs), args.runs)
        print(f"active model: {runs.resolve_model(None, args.runs)}")
        return 0
    if args.stop:
        stopped = runs.stop_job(runs.run_dir(args.stop, args.runs))
        print("stop requested" if stopped else "that run is not running")
        return 0
    for folder in runs.list_runs(args.runs):
        p = runs.read_progress(folder)
        print(f"{folder.name:40s} {p.get('state', '?'):9s} epoch {p.get('epoch', 0)}/{p.get('epochs', '?')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtfer", description=__doc__)
    parser.add_argument("--runs", default=None, help="runs folder (default: $MTFER_RUNS or ./runs)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="counts per split, task and class, and what was skipped")
    _data_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("prepare", help="detect, align and cache a data set's faces")
    _data_args(p)
    p.add_argument("--size", type=int, default=50)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--rebuild", action="store_true")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train a model (the paper's settings by default)")
    p.add_argument("--dataset", action="append", help="FORMAT=DIR, repeatable (fer2013=..., utkface=...)")
    p.add_argument("--config", help="a config.json to train from")
    p.add_argument("--resume", help="continue a stopped run (run id or folder)")
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("--background", action="store_true", help="start as a background job and return")
    p.add_argument("--single-task", action="store_true", help="emotion head only")
    p.add_argument("--tasks", help="comma-separated subset of emotion,gender,race,age")
    p.add_argument("--architecture", help="paper (default) or fast")
    p.add_argument("--loss-weights", help="e.g. emotion=2,age=4,race=1.5,gender=0.1")
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--protocol", choices=("holdout", "paper"))
    p.add_argument("--seed", type=int)
    p.add_argument("--precision", choices=("auto", "bfloat16", "float32"))
    p.add_argument("--strategy", choices=("default", "mirrored", "multiworker"))
    p.add_argument("--limit", type=int, help="at most this many samples per data set")
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--init-from", help="start from this run's or bundle's weights (sequential training)")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--name", help="label for the run id")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="per-task metrics of a model on a data set")
    p.add_argument("--model", default="default", help="run id, bundle folder, or 'default'")
    _data_args(p)
    p.add_argument("--split", default="test", help="train, val, test, or all (every sample)")
    p.add_argument("--out", help="output folder (default: the run's evaluation/<format>-<split>/)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="faces and four labels for photos")
    p.add_argument("images", nargs="+")
    p.add_argument("--model", default=None, help="run id, bundle folder, or 'default' (default: the active model)")
    p.add_argument("--json", action="store_true", help="print probabilities per face as JSON")
    p.add_argument("--largest", action="store_true", help="only the largest face")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("runs", help="list runs; stop one; make one the active model")
    p.add_argument("--stop", metavar="RUN")
    p.add_argument("--activate", metavar="RUN")
    p.set_defaults(func=cmd_runs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mtfer.runs import RunError

    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, RunError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"mtfer: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
