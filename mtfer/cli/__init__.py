"""The `mtfer` command: inspect, prepare, train, evaluate, predict, runs."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable

from mtfer.cli.assess_cmds import cmd_calibrate, cmd_evaluate
from mtfer.cli.data_cmds import cmd_inspect, cmd_prepare, data_args
from mtfer.cli.predict_cmds import cmd_export, cmd_predict, cmd_serve
from mtfer.cli.train_cmds import cmd_ensemble, cmd_pseudo_label, cmd_runs, cmd_train
from mtfer.core import quiet

# TensorFlow's C++ INFO and WARNING lines off unless the user asked for them; the first lines of its start-up,
# which this does not reach, are filtered by mtfer.core.quiet.import_tensorflow (called before a command needs it).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtfer", description=__doc__)
    parser.add_argument("--runs", default=None, help="runs folder (default: $MTFER_RUNS or ./runs)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=LazyEpilogParser)

    p = sub.add_parser("inspect", help="counts per split, task and class, and what was skipped")
    data_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("prepare", help="detect, align and cache a data set's faces")
    data_args(p)
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
    p.add_argument(
        "--distill",
        type=float,
        help="0-1: on faces with true labels too, learn this share of the teacher's probabilities (knowledge "
        "distillation; needs --pseudo-targets soft)",
    )
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--protocol", choices=("holdout", "paper"))
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--split-seed",
        type=int,
        help="carve the validation faces with this seed instead of --seed (runs that share it can be averaged)",
    )
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
    data_args(p)
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
    p.add_argument(
        "--model",
        required=True,
        help="run id or bundle folder (the shipped model is never changed: copy it first to calibrate it)",
    )
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
    data_args(p)
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
        "ensemble",
        help="average several trained models into one (a stronger teacher, or a slower, more accurate model)",
        description="Write one model whose every answer is the weighted average of the given models' probabilities, "
        "the weights chosen per task on their shared validation faces; then calibrate and evaluate it like any "
        "trained model. Its time per face is the sum of its members'.",
    )
    p.add_argument("models", nargs="+", help="two or more run ids, bundle folders or 'default'")
    p.add_argument("--name", required=True, help="name of the new model's folder, under the runs folder")
    p.add_argument("--weights", help="e.g. 0.7,0.3: the same weights for every task (default: chosen per task)")
    p.add_argument(
        "--dataset",
        action="append",
        metavar="FORMAT=DIR",
        help="where one of the models' data sets is now, if not where they trained (repeatable)",
    )
    p.add_argument("--no-evaluate", action="store_true", help="do not evaluate it on the validation and test faces")
    p.set_defaults(func=cmd_ensemble)

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
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="folders with --csv: 'local' (this process, default) or 'ray' (Ray Data actors, here or on a cluster; "
        "needs the 'scale' extra): photos, or videos one per actor call; reruns skip files already in the output; "
        "an OUT.parquet name writes Parquet",
    )
    p.add_argument("--address", default=None, help="--engine ray: an existing Ray cluster (default: start one here)")
    p.add_argument(
        "--actors", type=int, default=None, help="--engine ray: predictors working at once (default: cores, at most 2)"
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
        "--no-small-faces",
        dest="small_faces",
        action="store_false",
        default=None,
        help="skip the second look for faces under ~60 px (faster on large group photos; default: the model's)",
    )
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

    p = sub.add_parser(
        "serve",
        help="the four labels over HTTP: POST /v1/predict, /v1/predict/batch, GET /v1/model (needs the 'serve' extra)",
        description="Serves the model over HTTP with FastAPI and uvicorn: pip install -e '.[serve]'. OpenAPI docs at "
        "/docs. Set MTFER_API_TOKEN to require 'Authorization: Bearer <token>'.",
    )
    p.add_argument("--model", default=None, help="run id, bundle folder, or 'default' (default: the active model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--max-queue", type=int, default=8, help="requests answered at once; more get 429 Retry-After (default 8)"
    )
    p.add_argument(
        "--no-batching",
        dest="batch_faces",
        action="store_false",
        help="one network call per request (default: the faces of concurrent requests share network calls)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="write a model as a float32 .tflite (LiteRT) or .onnx file + metadata JSON")
    p.add_argument("--model", default=None, help="run id, bundle folder, or 'default' (default: the active model)")
    p.add_argument("--format", choices=("tflite", "onnx"), help="default: from --out's suffix")
    p.add_argument("--out", required=True, help="the file to write (FILE.json gets the metadata)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "runs",
        help="list runs (* marks the active model); stop one; make one the active model",
        description="The active model is the one that the app's pages and these commands use unless given --model; "
        "making one active changes it for everyone using this runs folder.",
    )
    p.add_argument("--stop", metavar="RUN", help="ask a running job to stop after its current step (kept, resumable)")
    p.add_argument(
        "--activate",
        metavar="RUN",
        help="make this the active model: a run id (as listed), a bundle folder, or 'default' to go back to the "
        "shipped model",
    )
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

    if args.command == "train" and not args.background:
        quiet.import_tensorflow()

    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, RunError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"mtfer: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `mtfer predict ... | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
