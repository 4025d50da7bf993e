"""Regenerate the README's results table: single- vs multi-task, holdout vs the paper's protocol.

    python training/reproduce.py --data ../shared/data [--architecture fast] [--epochs 12] [--only multi-holdout]
    python training/reproduce.py --table-only            # rebuild the table from finished runs

Each row is one `mtfer train` run under runs/reproduce-<row>/ (skipped when already finished, resumed when stopped).
The table is written to training/results.md and training/results.json. Nothing here chooses a model by test
numbers: `--ship` copies the multi-task holdout run with the best *validation* emotion accuracy to models/default.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402

from mtfer import runs  # noqa: E402
from mtfer.training import TrainConfig, setup_logging, train  # noqa: E402

HERE = Path(__file__).resolve().parent
ROWS = {
    "multi-holdout": {"tasks": ["emotion", "gender", "race", "age"], "protocol": "holdout"},
    "single-holdout": {"tasks": ["emotion"], "protocol": "holdout"},
    "multi-paper": {"tasks": ["emotion", "gender", "race", "age"], "protocol": "paper"},
    "single-paper": {"tasks": ["emotion"], "protocol": "paper"},
    # More epochs for the model we ship, from the multi-holdout run's weights (run with --only).
    "multi-holdout-continued": {
        "tasks": ["emotion", "gender", "race", "age"],
        "protocol": "holdout",
        "init_from": "reproduce-multi-holdout",
    },
}
DEFAULT_ROWS = ["multi-holdout", "single-holdout", "multi-paper", "single-paper"]
# The paper's figures (its own 90/10 split, optimistic): FER2013 single-task emotion; gender, race and age from
# its RAF-DB multi-task model (it has no multi-task FER2013 model trained from scratch; 53.12% is RAF-DB fine-tuned).
PAPER_ROW = "| Saroop et al. (paper's 90/10 split) | paper | 67.91% (single-task) | 78.32% (RAF-DB) | 86.10% (RAF-DB) | 74.76% (RAF-DB) | 100 max | — |"


def row_config(row: str, data: Path, args: argparse.Namespace) -> TrainConfig:
    spec = ROWS[row]
    datasets = [{"format": "fer2013", "root": str((data / "fer2013").resolve())}]
    if len(spec["tasks"]) > 1:
        datasets.append({"format": "utkface", "root": str((data / "utkface").resolve())})
    return TrainConfig(
        datasets=datasets,
        tasks=spec["tasks"],
        protocol=spec["protocol"],
        architecture=args.architecture,
        epochs=args.epochs,
        precision=args.precision,
        seed=args.seed,
        blur_sigma=args.blur_sigma,
        init_from=str(runs.run_dir(spec["init_from"], args.runs)) if "init_from" in spec else None,
        name=f"reproduce-{row}",
        run_id=f"reproduce-{row}",
    )


def run_row(row: str, data: Path, args: argparse.Namespace) -> Path:
    folder = runs.run_dir(f"reproduce-{row}", args.runs)
    state = runs.read_progress(folder).get("state") if folder.exists() else None
    if state == "finished":
        print(f"{row}: already finished")
        return folder
    setup_logging(folder)
    resume = (folder / runs.CHECKPOINT_DIR / "state.json").exists()
    config = TrainConfig.from_dict(runs.read_json(folder / runs.CONFIG_FILE)) if resume else row_config(row, data, args)
    if not resume and folder.exists():
        shutil.rmtree(folder)
    train(config, folder, resume=resume)
    if runs.read_progress(folder).get("state") != "finished":
        raise SystemExit(f"{row}: {runs.read_progress(folder).get('state')}; rerun to resume it")
    return folder


def table(runs_dir: Path | None) -> tuple[str, list[dict]]:
    rows, lines = [], []
    lines.append(
        "| run | protocol | emotion (FER2013) | gender (UTKFace) | race (UTKFace) | age (UTKFace) | epochs | wall time |"
    )
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in ROWS:
        folder = runs.run_dir(f"reproduce-{row}", runs_dir)
        if not (folder / runs.METADATA_FILE).exists():
            continue
        meta = runs.read_json(folder / runs.METADATA_FILE)
        split = "val" if meta["protocol"] == "paper" else "test"
        metrics = meta["metrics"]
        kind = "multi" if len(meta["tasks"]) > 1 else "single"
        config = meta.get("config", {})
        cells, record = [], {"row": row, "protocol": meta["protocol"], "split": split}
        for task, ds in (("emotion", "fer2013"), ("gender", "utkface"), ("race", "utkface"), ("age", "utkface")):
            acc = metrics.get(f"{ds}-{split}", {}).get(task, {}).get("accuracy")
            record[task] = acc
            cells.append("—" if acc is None else f"{acc:.2%}")
        history = pd.read_csv(folder / runs.HISTORY_FILE)
        epochs, seconds = len(history), float(history["seconds"].sum())  # epoch times survive stop and resume
        if config.get("init_from"):  # continued from another run: count its epochs and time too
            parent = pd.read_csv(Path(config["init_from"]) / runs.HISTORY_FILE)
            epochs, seconds = epochs + len(parent), seconds + float(parent["seconds"].sum())
        record.update(epochs=epochs, seconds=round(seconds), architecture=meta["architecture"])
        protocol = "holdout (test split)" if split == "test" else "paper 90/10 (**optimistic**)"
        minutes = f"{seconds / 60:.0f} min"
        label = f"{kind}-task {meta['architecture']}" + (" (continued, shipped)" if config.get("init_from") else "")
        lines.append(f"| {label} | {protocol} | " + " | ".join(cells) + f" | {epochs} | {minutes} |")
        rows.append(record)
    lines.append(PAPER_ROW)
    return "\n".join(lines) + "\n", rows


def write_table(runs_dir: Path | None) -> str:
    """training/results.md and .json, and the table between the results markers in README.md."""
    text, records = table(runs_dir)
    (HERE / "results.md").write_text(text)
    (HERE / "results.json").write_text(json.dumps(records, indent=2) + "\n")
    readme = HERE.parent / "README.md"
    start, end = "<!-- results:start -->\n", "<!-- results:end -->"
    content = readme.read_text()
    if start in content and end in content:
        head, rest = content.split(start, 1)
        readme.write_text(head + start + text + end + rest.split(end, 1)[1])
    return text


def ship(runs_dir: Path | None, data_root: Path) -> Path | None:
    """Copy the multi-task holdout run with the best validation emotion accuracy to models/default."""
    candidates = []
    for folder in runs.list_runs(runs_dir):
        meta_path = folder / runs.METADATA_FILE
        if not meta_path.exists():
            continue
        meta = runs.read_json(meta_path)
        if meta.get("protocol") != "holdout" or len(meta.get("tasks", {})) < 4:
            continue
        val = meta["metrics"].get("fer2013-val", {}).get("emotion", {}).get("accuracy")
        if val is not None:
            candidates.append((val, folder))
    if not candidates:
        return None
    val, best = max(candidates)
    target = runs.DEFAULT_BUNDLE
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    bundle = runs.load_bundle(best)
    runs.save_bundle(bundle.model, bundle.metadata, target)  # without optimizer state: a third of the size
    for name in (runs.HISTORY_FILE, runs.CONFIG_FILE):
        shutil.copy2(best / name, target / name)
    shutil.copytree(best / runs.EVALUATION_DIR, target / runs.EVALUATION_DIR)
    # Sources relative to the data root, not this machine's absolute paths: the Evaluate page finds the images
    # under whichever data roots the user has.
    for samples in (target / runs.EVALUATION_DIR).glob("*/samples.csv"):
        table = pd.read_csv(samples, dtype=str, keep_default_na=False)
        table["source"] = [
            str(Path(s).relative_to(data_root)) if Path(s).is_relative_to(data_root) else s for s in table["source"]
        ]
        table.to_csv(samples, index=False)
    print(f"shipped {best.name} (validation emotion accuracy {val:.2%}) to {target}")
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--runs", type=Path, default=None)
    parser.add_argument("--architecture", default="fast")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument(
        "--precision", default="float32", help="auto, bfloat16 or float32 (fast is quickest in float32)"
    )
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument(
        "--blur-sigma",
        type=float,
        default=3.0,
        help="blur sharp faces to match the shared FER2013 train split, which is blurred (README, Data quirks)",
    )
    parser.add_argument("--only", action="append", choices=sorted(ROWS), help="run only these rows (repeatable)")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--ship", action="store_true", help="copy the best holdout multi-task run to models/default")
    args = parser.parse_args()
    if not args.table_only:
        for row in args.only or DEFAULT_ROWS:
            run_row(row, args.data, args)
            write_table(args.runs)
    print(write_table(args.runs))
    if args.ship:
        ship(args.runs, args.data.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
