"""The `mtfer` command: inspect, prepare, train, evaluate, predict, runs."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from mtfer.core import quiet

# TensorFlow's C++ INFO and WARNING lines off unless the user asked for them; the first lines of its start-up,
# which this does not reach, are filtered by mtfer.quiet.import_tensorflow (called before a command needs it).
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
    from mtfer.core.faces import PreprocessConfig
    from mtfer.datasets.cache import TextProgress, prepare

    prepared = prepare(
        args.format,
        args.data,
        config=PreprocessConfig(size=args.size),
        workers=args.workers,
        progress=TextProgress(),
        limit=args.limit,
        rebuild=args.rebuild,
        splits=args.split,
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


TRAIN_SETTINGS = (
    "architecture",
    "learning_rate",
    "batch_size",
    "epochs",
    "protocol",
    "seed",
    "precision",
    "strategy",
    "limit",
    "steps_per_epoch",
    "init_from",
    "name",
    "early_stopping_patience",
    "label_smoothing",
    "lr_schedule",
    "warmup_epochs",
    "weight_decay",
    "class_weighting",
    "augment",
    "mixup",
    "ema",
    "tta_flip",
    "pseudo_targets",
)


def train_config_from_args(args: argparse.Namespace):
    """The `train` command's settings: the preset's (the paper's by default), then every flag given on top."""
    from mtfer.train import config as train_config

    fields: dict = {"datasets": _parse_datasets(args.dataset or [])}
    for name in TRAIN_SETTINGS:
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.single_task:
        fields["tasks"] = ["emotion"]
    elif args.tasks:
        fields["tasks"] = [t.strip() for t in args.tasks.split(",")]
    if args.no_augment:
        fields["augment"] = False
    mode = (args.loss_weights or "").strip().lower()
    if mode in train_config.LOSS_WEIGHTS_MODES:  # --loss-weights learned (or fixed: the weights as they are)
        fields["loss_weights_mode"] = mode
    elif (weights := _parse_weights(args.loss_weights)) is not None:
        fields["loss_weights"] = {**train_config.TrainConfig().loss_weights, **weights}
    if getattr(args, "pseudo_labels", None):
        fields["pseudo_labels"] = list(args.pseudo_labels)
    if args.preset:
        return train_config.TrainConfig.from_preset(args.preset, **fields)
    return train_config.TrainConfig(**fields)


def cmd_train(args: argparse.Namespace) -> int:
    from mtfer.core import bundles
    from mtfer.store import jobs, runs
    from mtfer.train import config as train_config
    from mtfer.train import finalize, trainer

    if args.finish:
        folder = bundles.resolve_model(args.finish, args.runs)
        trainer.setup_logging(folder)
        finalize.finish(folder)
        print(f"run {folder}")
        print(json.dumps(bundles.read_json(folder / bundles.METADATA_FILE)["metrics"], indent=2))
        return 0
    if args.resume:
        folder = bundles.resolve_model(args.resume, args.runs)
        config = train_config.TrainConfig.from_dict(bundles.read_json(folder / bundles.CONFIG_FILE))
        trainer.setup_logging(folder)
        trainer.train(config, folder, resume=True)
        return 0
    if args.config:
        config = train_config.TrainConfig.from_dict(bundles.read_json(args.config))
    else:
        config = train_config_from_args(args)
    if args.background:
        folder = jobs.start_job(config.to_dict(), args.runs)
        print(f"started {folder.name} in the background (pid {runs.read_progress(folder).get('pid')})")
        return 0
    folder = (
        Path(args.run_dir)
        if args.run_dir
        else bundles.run_dir(config.run_id or runs.new_run_id(config.name), args.runs)
    )
    trainer.setup_logging(folder)
    trainer.train(config, folder)
    metadata = bundles.read_json(folder / bundles.METADATA_FILE) if (folder / bundles.METADATA_FILE).exists() else {}
    print(f"run {folder}")
    if "metrics" in metadata:  # a stopped run has none (and once printed a bare "{}")
        print(json.dumps(metadata["metrics"], indent=2))
    return 0


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
    from mtfer.datasets.cache import TextProgress

    result, out_dir = evaluate_dataset(
        args.model,
        args.format,
        args.data,
        args.split,
        out_dir=args.out,
        runs_dir=args.runs,
        progress=TextProgress(f"framing the {args.split} faces" if args.split != "all" else "framing the faces"),
    )
    print(format_metrics(result.metrics))
    print(f"evaluation saved in {out_dir}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from mtfer.core import bundles

    path = bundles.resolve_model(args.model, args.runs)  # a bad --model fails here, before TensorFlow starts
    quiet.import_tensorflow()
    from mtfer.assess.evaluation import METRICS_FILE
    from mtfer.datasets.cache import TextProgress
    from mtfer.train.finalize import calibrate_bundle

    result = calibrate_bundle(
        path,
        runs_dir=args.runs,
        datasets=_parse_datasets(args.dataset) if args.dataset else None,
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


def cmd_pseudo_label(args: argparse.Namespace) -> int:
    quiet.import_tensorflow()
    from mtfer.datasets.cache import TextProgress
    from mtfer.train.pseudo import pseudo_label

    result = pseudo_label(
        args.model,
        args.format,
        args.data,
        threshold=args.threshold,
        target_accuracy=args.target_accuracy,
        min_faces=args.min_faces,
        val=_parse_datasets(args.val) if args.val else None,
        tasks=[t.strip() for t in args.tasks.split(",")] if args.tasks else None,
        runs_dir=args.runs,
        progress=TextProgress("framing the faces"),
    )
    for task in result.meta["tasks"]:
        counts, threshold = result.meta["counts"][task], result.meta["thresholds"][task]
        rule = f"threshold {threshold:.4f}" if threshold is not None else "no threshold reaches the target"
        print(f"{task}: {counts['kept']:,} of {counts['faces']:,} faces labelled ({rule})")
    print(f"pseudo-labels saved in {result.path}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from mtfer.core.decoding import ImageError, decode_image

    if args.csv is not None:
        return _predict_csv(args)
    decoded, failed = [], 0
    for image in args.images:  # decode first: a bad file is reported before TensorFlow is even imported
        try:
            decoded.append((image, decode_image(Path(image).read_bytes())))
        except (ImageError, OSError) as exc:
            failed += 1
            reason = _csv_hint(image) or getattr(exc, "strerror", None) or exc
            print(f"mtfer: error: {image}: {reason}", file=sys.stderr)
    if not decoded:
        return 1

    quiet.import_tensorflow()
    from mtfer.core.inference import Predictor

    predictor = Predictor(args.model)
    outputs = []
    for (image, _array), preds in zip(
        decoded, predictor.predict_images([a for _, a in decoded], largest_only=args.largest), strict=True
    ):
        why = _explain(predictor, preds, args) if args.explain else [None] * len(preds)
        faces_out = [
            {**p.to_dict(), **({"explain": e.to_dict()} if e else {})} for p, e in zip(preds, why, strict=True)
        ]
        outputs.append({"image": image, "faces": faces_out})
        if not args.json:
            print(f"{image}: {len(preds)} face(s)")
            for k, (p, e) in enumerate(zip(preds, why, strict=True), start=1):
                tops = ", ".join(f"{t} {p.top(t)[0]} ({p.top(t)[1]:.0%})" for t in p.probabilities)
                print(f"  face {k} at {p.box}: {tops}")
                if e is not None:
                    print(f"    why: {e.summary()}")
    if args.json:
        print(json.dumps(outputs[0] if len(args.images) == 1 else outputs, indent=2))
    return 1 if failed else 0


def _csv_hint(path: str) -> str | None:
    """Why a folder or a video given without --csv is not read, and what to type instead."""
    from mtfer.media.video import is_video

    if Path(path).is_dir():
        return "a folder: add --csv OUT.csv to write one row per face of every photo in it"
    if Path(path).is_file() and is_video(path):
        return "a video: add --csv OUT.csv to write its faces frame by frame (a timeline per face)"
    return None


def _predict_csv(args: argparse.Namespace) -> int:
    """`predict --csv`: a video's faces frame by frame, or every photo of folders (walked recursively) and files,
    one row per face, to a CSV file ('-': standard output). A progress bar on stderr; a summary at the end."""
    from mtfer.core import decoding
    from mtfer.media import video, video_limits

    if args.json or args.explain:
        raise ValueError("--csv writes a table: leave out --json and --explain")
    if not args.fps > 0:
        raise ValueError(f"--fps: the sampling rate must be a positive number of frames per second, got {args.fps:g}")
    videos, photos = [], []
    for item in args.images:
        path = Path(item)
        if path.is_dir():
            photos.append(item)
        elif not path.is_file():
            raise FileNotFoundError(f"{item}: no such file or folder")
        else:
            with path.open("rb") as f:
                head = f.read(64)
            is_photo = decoding.image_kind(head) is not None or not video.is_video(path)
            (photos if is_photo else videos).append(item)
    if videos and photos:
        raise ValueError(
            f"{videos[0]} is a video and {photos[0]} is not: their tables differ (time and tracks); "
            "run `mtfer predict` once for the videos and once for the photos"
        )
    limits = video_limits.video_limits()
    limits = video.VideoLimits(
        max_seconds=args.max_seconds if args.max_seconds is not None else limits.max_seconds,
        max_frames=args.max_frames if args.max_frames is not None else limits.max_frames,
    )
    if videos:  # every video checked before TensorFlow is imported
        for item in videos:
            video.probe(item)

    quiet.import_tensorflow()
    from mtfer.core.inference import Predictor

    predictor = Predictor(args.model)
    to_stdout = args.csv == "-"
    report = sys.stderr if to_stdout else sys.stdout
    out = sys.stdout if to_stdout else args.csv
    from mtfer.media.folders import photos_to_csv, text_output

    if photos:
        from mtfer.datasets.cache import TextProgress

        result = photos_to_csv(predictor, photos, out, largest_only=args.largest, progress=TextProgress("photos"))
        print(result.summary() + ("" if to_stdout else f"; table in {args.csv}"), file=report)
        return 0
    with text_output(out) as handle:
        for k, item in enumerate(videos):
            analysis = video.VideoAnalysis(item, predictor, fps=args.fps, limits=limits, largest_only=args.largest)
            _run_video(analysis)
            analysis.table().to_csv(handle, index=False, header=k == 0)
            handle.flush()
            for note in analysis.notes:
                print(f"mtfer: note: {analysis.source}: {note}", file=sys.stderr)
            print(_video_summary(analysis) + ("" if to_stdout else f"; table in {args.csv}"), file=report)
            if analysis.stopped:
                return 130
    return 0


def _run_video(analysis) -> None:
    """Run a video analysis with a progress bar on stderr; Ctrl-C stops it and keeps the frames analysed."""
    from mtfer.datasets.cache import TextProgress

    progress = TextProgress(f"{analysis.source}: frames")
    try:
        progress(0, analysis.expected_frames)
        for _ in analysis.run():
            progress(len(analysis.frames), analysis.expected_frames)
    except KeyboardInterrupt:
        analysis.stop()
    progress(len(analysis.frames), len(analysis.frames))


def _video_summary(analysis) -> str:
    """'talk.mp4: 150 frames analysed (0:00.0 to 0:29.8, 5 per second) in 12.3 s: 2 faces followed, 4 frames
    without a face'."""
    from mtfer.media.video import format_time

    frames = analysis.frames
    tracks = {f.track for frame in frames for f in frame.faces}
    empty = sum(1 for frame in frames if not frame.faces)
    span = f"{format_time(frames[0].time_s)} to {format_time(frames[-1].time_s)}, " if frames else ""
    return (
        f"{analysis.source}: {len(frames):,} frame{'s' if len(frames) != 1 else ''} analysed ({span}"
        f"{analysis.fps:g} per second): {len(tracks):,} face{'s' if len(tracks) != 1 else ''} followed, "
        f"{empty:,} frame{'s' if empty != 1 else ''} without a face"
    )


def _explain(predictor, preds: list, args: argparse.Namespace) -> list:
    """`predict --explain`: a heatmap per face (mtfer.explain) of its top class of --explain-task."""
    from mtfer.assess.explain import explain_predictions

    return explain_predictions(predictor, preds, args.explain_task, args.explain_method)


def cmd_export(args: argparse.Namespace) -> int:
    from mtfer.core import backends, convert, export

    fmt = args.format or backends.format_from_path(args.out)
    if fmt == "onnx" and (reason := convert.onnx_unavailable_reason()):  # before TensorFlow is imported
        raise convert.ExportError(reason)
    quiet.import_tensorflow()
    result = export.export_bundle(args.model, fmt, args.out, runs_dir=args.runs)
    source = result.metadata["export"]["source_model"]
    print(f"{result.path}: {result.format}, float32, {result.size_bytes / 1e6:.2f} MB (from {source})")
    print(f"metadata: {result.metadata_path}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from mtfer.core import bundles
    from mtfer.store import jobs, runs

    if args.activate:
        bundles.set_active_model(bundles.resolve_model(args.activate, args.runs), args.runs)
        print(f"active model: {bundles.resolve_model(None, args.runs)}")
        return 0
    if args.stop:
        stopped = jobs.stop_job(bundles.run_dir(args.stop, args.runs))
        print("stop requested" if stopped else "that run is not running")
        return 0
    for folder in runs.list_runs(args.runs):
        p = runs.read_progress(folder)
        print(f"{folder.name:40s} {p.get('state', '?'):9s} epoch {p.get('epoch', 0)}/{p.get('epochs', '?')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtfer", description=__doc__)
    parser.add_argument("--runs", default=None, help="runs folder (default: $MTFER_RUNS or ./runs)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=LazyEpilogParser)

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
    p.add_argument(
        "--split",
        action="append",
        choices=("train", "val", "test"),
        help="frame only this split's images (repeatable; default: every split)",
    )
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train a model (the paper's settings by default)")
    p.add_argument("--dataset", action="append", help="FORMAT=DIR, repeatable (fer2013=..., utkface=...)")
    p.add_argument("--config", help="a config.json to train from")
    p.add_argument("--resume", help="continue a stopped run (run id or folder)")
    p.add_argument(
        "--finish",
        help="make a stopped run a finished model without training further: its best validation epoch, evaluated",
    )
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("--background", action="store_true", help="start as a background job and return")
    p.add_argument("--single-task", action="store_true", help="emotion head only")
    p.add_argument("--tasks", help="comma-separated subset of emotion,gender,race,age")
    p.add_argument("--architecture", help="paper (default) or fast")
    p.add_argument(
        "--loss-weights",
        help="e.g. emotion=2,age=4,race=1.5,gender=0.1, or 'learned': learn them (uncertainty weighting)",
    )
    p.add_argument(
        "--pseudo-labels",
        action="append",
        metavar="auto|DIR",
        help="fill the training split's missing labels from pseudo-labels (mtfer pseudo-label): 'auto' (the newest "
        "of each data set) or a folder; repeatable",
    )
    p.add_argument(
        "--pseudo-targets",
        choices=("hard", "soft"),
        help="train on the teacher's top class (hard, the default) or its probabilities (soft)",
    )
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
    p.add_argument(
        "--preset",
        metavar="{demo,recipe,paper}",  # checked by TrainConfig.from_preset (the one preset table, mtfer.train.config)
        help="paper: the paper's settings (the default); recipe: the shipped recipe (fast network, cosine schedule, "
        "AdamW, label smoothing, sqrt class weights, strong augmentation, test-time flip; 30 epochs); demo: the "
        "recipe on about 4,000 faces per data set for 3 epochs. Flags override it",
    )
    augment = p.add_mutually_exclusive_group()
    augment.add_argument("--augment", choices=("none", "light", "strong"), help="light (default) or strong")
    augment.add_argument("--no-augment", action="store_true", help="same as --augment none")
    p.add_argument("--label-smoothing", type=float, help="e.g. 0.1 (default 0)")
    p.add_argument(
        "--lr-schedule", choices=("plateau", "cosine", "onecycle"), help="plateau (paper, default), cosine, onecycle"
    )
    p.add_argument("--warmup-epochs", type=float, help="linear warmup of the cosine schedule (default 1)")
    p.add_argument("--weight-decay", type=float, help="> 0: AdamW with this decoupled weight decay")
    p.add_argument("--class-weighting", choices=("none", "balanced", "sqrt"), help="emotion class weights")
    p.add_argument("--mixup", type=float, help="mixup alpha (default 0: off)")
    p.add_argument("--ema", type=float, help="keep an exponential moving average of the weights, e.g. 0.999")
    p.add_argument(
        "--tta-flip", action=argparse.BooleanOptionalAction, default=None, help="average each face with its mirror"
    )
    p.add_argument(
        "--early-stopping-patience",
        type=int,
        help="epochs without improvement before stopping (default 11; with a schedule, the number of epochs)",
    )
    p.add_argument("--name", help="label for the run id")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="per-task metrics of a model on a data set")
    p.add_argument("--model", default="default", help="run id, bundle folder, or 'default'")
    _data_args(p)
    p.add_argument(
        "--split", default="test", help="train, val, test, or all (every sample); only its images are framed"
    )
    p.add_argument(
        "--out",
        help="output folder (default: a run's own evaluation/<format>-<split>/; for any other model, such as the "
        "shipped default, <runs>/evaluations/<model>-<time>-<format>-<split>/)",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "calibrate",
        help="fit temperature scaling per head on a model's validation faces, so its confidences can be trusted",
        description="Fit one temperature per head on the model's validation faces (carved again from the data sets "
        "it trained on, exactly as training carved them) and store it in its metadata.json; recompute its 'not sure' "
        "thresholds on the calibrated probabilities; evaluate it again on its validation and test faces. Accuracy "
        "does not change: only the confidences move.",
    )
    p.add_argument("--model", default="default", help="run id, bundle folder, or 'default'")
    p.add_argument(
        "--dataset",
        action="append",
        metavar="FORMAT=DIR",
        help="where one of the model's data sets is now, if not where it trained (repeatable)",
    )
    p.add_argument(
        "--no-evaluate", action="store_true", help="do not evaluate the model again on its validation and test faces"
    )
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("pseudo-label", help="give a data set's faces the labels it lacks, from a teacher model")
    p.add_argument("--model", default="default", help="the teacher: run id, bundle folder, or 'default'")
    _data_args(p)
    p.add_argument(
        "--threshold",
        default="auto",
        help="auto (default: per task, the lowest confidence at which the teacher reaches --target-accuracy on "
        "labelled validation faces) or a confidence 0-1 for every task",
    )
    p.add_argument("--target-accuracy", type=float, default=0.8, help="accuracy the 'auto' threshold aims at")
    p.add_argument("--min-faces", type=int, default=50, help="validation faces an 'auto' threshold must keep")
    p.add_argument(
        "--val",
        action="append",
        metavar="FORMAT=DIR",
        help="data sets whose validation faces choose 'auto' thresholds (default: the teacher's own); repeatable",
    )
    p.add_argument("--tasks", help="comma-separated subset of the tasks the data set lacks (default: all)")
    p.set_defaults(func=cmd_pseudo_label)

    p = sub.add_parser(
        "predict",
        help="faces and four labels for photos; with --csv, for a video (frame by frame) or a folder of photos",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE|VIDEO|DIR", help="photos; or, with --csv, a video or folders")
    p.add_argument(
        "--csv",
        metavar="OUT.csv",
        help="write one row per face to this CSV file ('-': standard output): a video frame by frame, with a track "
        "per face; or every photo of folders (walked recursively) and files, unreadable ones in an 'error' column",
    )
    p.add_argument("--fps", type=float, default=5.0, help="video: frames analysed per second of video (default 5)")
    p.add_argument(
        "--max-seconds",
        type=float,
        help="video: analyse at most this many seconds from the start (default $MTFER_VIDEO_MAX_SECONDS or 600)",
    )
    p.add_argument(
        "--max-frames",
        type=int,
        help="video: analyse at most this many frames (default $MTFER_VIDEO_MAX_FRAMES or 3000)",
    )
    p.add_argument("--model", default=None, help="run id, bundle folder, or 'default' (default: the active model)")
    p.add_argument("--json", action="store_true", help="print probabilities per face as JSON")
    p.add_argument("--largest", action="store_true", help="only the largest face")
    p.add_argument(
        "--explain", action="store_true", help="add a heatmap per face: where the network looked (JSON: 'explain')"
    )
    p.add_argument("--explain-task", default=None, help="the head explained (default: emotion); its top class")
    p.add_argument(
        "--explain-method",
        choices=("occlusion", "layercam", "gradcam"),
        default="occlusion",
        help="occlusion (default: the most faithful), layercam (faster), or gradcam (classic Grad-CAM, the weakest)",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="write a model as a float32 .tflite (LiteRT) or .onnx file + metadata JSON")
    p.add_argument("--model", default=None, help="run id, bundle folder, or 'default' (default: the active model)")
    p.add_argument("--format", choices=("tflite", "onnx"), help="default: from --out's suffix")
    p.add_argument("--out", required=True, help="the file to write (FILE.json gets the metadata)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("runs", help="list runs; stop one; make one the active model")
    p.add_argument("--stop", metavar="RUN")
    p.add_argument("--activate", metavar="RUN")
    p.set_defaults(func=cmd_runs)

    for name in ("prepare", "train", "evaluate"):
        command = sub.choices[name]
        command.epilog_factory = functools.partial(where_help, name)
        command.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


class LazyEpilogParser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog is made when the help is shown: what it says (where files go, now) needs
    modules that every other use of the command would import for nothing."""

    epilog_factory: Callable[[], str] | None = None

    def format_help(self) -> str:
        if self.epilog_factory is not None and self.epilog is None:
            self.epilog = self.epilog_factory()
        return super().format_help()


def where_help(command: str) -> str:
    """The end of `prepare`, `train` and `evaluate --help`: where files go, which variables move them, now."""
    from mtfer.core import bundles
    from mtfer.datasets.cache import ENV_CACHE_DIR, default_cache_dir
    from mtfer.store import settings

    roots = " and ".join(r if r.startswith(".") else f"./{r}" for r in settings.DEFAULT_DATA_ROOTS)
    lines = ["where files go:"]
    if command != "prepare":
        lines.append(f"  runs folder     --runs or $MTFER_RUNS, default ./runs (now {bundles.default_runs_dir()})")
    if command == "train":
        lines.append("  the run         <runs>/<run id>/: model, history, log, checkpoints, its evaluations")
    if command == "evaluate":
        lines += [
            "  evaluation      --out, else a run's own evaluation/<format>-<split>/ when --model is a run of the",
            "                  runs folder, else <runs>/evaluations/<model>-<time>-<format>-<split>/ (never inside",
            "                  the shipped models/default or any other bundle)",
        ]
    lines += [
        f"  prepared faces  ${ENV_CACHE_DIR}, default ./cache (now {default_cache_dir().resolve()}): one folder per",
        "                  data set, splits and settings, reused until an image, a label or a setting changes",
    ]
    if command == "evaluate":
        lines.append("                  (only the scored split is framed, or taken from a cache of every split)")
    lines += [
        f"  data sets       ${settings.ENV_DATA_ROOTS} ({os.pathsep}-separated, default {roots}) is where the app",
        "                  looks for data sets; the command line reads the paths it is given",
        "Relative defaults are taken from the working folder.",
    ]
    if command != "prepare":
        lines.append("TensorFlow's start-up messages are hidden; TF_CPP_MIN_LOG_LEVEL=0 shows them.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mtfer.core.bundles import RunError

    if args.command == "evaluate" or (args.command == "train" and not args.background):
        quiet.import_tensorflow()

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
