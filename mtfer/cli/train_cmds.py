"""`mtfer train`, `mtfer runs` and `mtfer pseudo-label`: the trainer's settings from flags, runs listed, stopped\nand activated, pseudo-labels made."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mtfer.cli.data_cmds import parse_datasets
from mtfer.core import quiet


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
    "split_seed",
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
    "distill",
)


def train_config_from_args(args: argparse.Namespace):
    """The `train` command's settings: the preset's (the paper's by default), then every flag given on top."""
    from mtfer.train import config as train_config

    fields: dict = {"datasets": parse_datasets(args.dataset or [])}
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
        jobs.refuse_resuming(folder)
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


def cmd_pseudo_label(args: argparse.Namespace) -> int:
    quiet.import_tensorflow()
    from mtfer.cli.progress import TextProgress
    from mtfer.train.pseudo import pseudo_label

    result = pseudo_label(
        args.model,
        args.format,
        args.data,
        threshold=args.threshold,
        target_accuracy=args.target_accuracy,
        min_faces=args.min_faces,
        val=parse_datasets(args.val) if args.val else None,
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


def cmd_ensemble(args: argparse.Namespace) -> int:
    from mtfer.core import bundles

    members = [bundles.resolve_model(m, args.runs) for m in args.models]  # a bad name fails before TensorFlow starts
    out = bundles.run_dir(bundles.validate_run_id(args.name), args.runs)
    weights = None
    if args.weights:
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise ValueError(f"--weights takes numbers separated by commas, got {args.weights!r}") from None
    quiet.import_tensorflow()
    from mtfer.train.ensemble import ENSEMBLE_KEY, combine

    path = combine(
        members,
        out,
        weights=weights,
        datasets=parse_datasets(args.dataset) if args.dataset else None,
        evaluate=not args.no_evaluate,
        say=lambda step: print(f"{step} ...", flush=True),
    )
    section = bundles.read_json(path / bundles.METADATA_FILE)[ENSEMBLE_KEY]
    for task, w in section["weights"].items():
        score = section["validation_accuracy"][task]
        if score["ensemble"] is None:
            print(f"{task}: weights {w} (no labelled validation faces)")
            continue
        members_text = ", ".join(f"{a:.2%}" for a in score["members"])
        print(f"{task}: weights {w}; validation accuracy {score['ensemble']:.2%} (members {members_text})")
    print(f"ensemble saved in {path}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from mtfer.core import bundles
    from mtfer.store import jobs, runs
    from mtfer.store.settings import active_model

    if args.activate == "default":
        bundles.clear_active_model(args.runs)
        print(f"active model: {bundles.resolve_model(None, args.runs)} (the shipped model)")
        return 0
    if args.activate:
        bundles.set_active_model(bundles.resolve_model(args.activate, args.runs), args.runs)
        print(f"active model: {bundles.resolve_model(None, args.runs)}")
        return 0
    if args.stop:
        stopped = jobs.stop_job(bundles.run_dir(args.stop, args.runs))
        print("stop requested" if stopped else "that run is not running")
        return 0
    active = active_model(args.runs)
    for folder in runs.list_runs(args.runs):
        p = runs.read_progress(folder)
        mark = "*" if folder.resolve() == active.path else " "
        print(f"{mark} {folder.name:40s} {p.get('state', '?'):9s} epoch {p.get('epoch', 0)}/{p.get('epochs', '?')}")
    where = "the shipped model" if active.shipped else active.path.name
    print(f"active model: {where} ({active.path}); change it with --activate RUN, back with --activate default")
    return 0
