"""The ablation table of docs/results.md and the multi- vs single-task comparison over seeds, at one fixed budget.

    python training/ablate.py --data ../shared/data [--epochs 3] [--seeds 1 2 3] [--only recipe-single ...]
    python training/ablate.py --table-only            # rebuild the tables from finished runs

Every row is the shipped recipe (`mtfer train --preset recipe`, the `fast` network) with one thing changed, trained
for the same number of epochs (the cosine schedule is fitted to that budget) on the holdout protocol: validation
carved from the training split, test split scored once at the end. Runs live in runs/ablate-<row>-s<seed>/ and
are skipped when already finished, so the script can be rerun (or resumed in a later session) to add rows or seeds.
Writes training/ablation.md and training/ablation.json, and the table between the ablation markers in
docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mtfer.core import bundles
from mtfer.store import runs  # noqa: E402
from mtfer.train.config import TrainConfig
from mtfer.train.trainer import setup_logging, train  # noqa: E402

HERE = Path(__file__).resolve().parent
MULTI = ["emotion", "gender", "race", "age"]
# row -> (what it changes, TrainConfig overrides on top of the recipe preset)
ROWS: dict[str, tuple[str, dict]] = {
    "recipe-single": ("the recipe, emotion only (FER2013)", {"tasks": ["emotion"]}),
    "recipe-multi": ("the recipe, four tasks (FER2013 + UTKFace, masked)", {"tasks": MULTI}),
    "plateau-adam": (
        "the paper's optimiser: Adam 3e-4, plateau schedule, batch 32",
        {"tasks": ["emotion"], "lr_schedule": "plateau", "learning_rate": 3e-4, "weight_decay": 0.0, "batch_size": 32},
    ),
    "no-label-smoothing": ("label smoothing 0 (recipe: 0.1)", {"tasks": ["emotion"], "label_smoothing": 0.0}),
    "no-class-weights": ("no class weights (recipe: sqrt-balanced)", {"tasks": ["emotion"], "class_weighting": "none"}),
    "light-augment": ("the paper-era light augmentation (recipe: strong)", {"tasks": ["emotion"], "augment": "light"}),
    "mixup": ("mixup alpha 0.2", {"tasks": ["emotion"], "mixup": 0.2}),
    "ema": ("EMA of the weights, 0.999", {"tasks": ["emotion"], "ema": 0.999}),
    "paper-network": (
        "the paper's network (bf16; recipe: the fast network, a fifth of its FLOPs)",
        {"tasks": ["emotion"], "architecture": "paper"},
    ),
    "wide-network": (
        "the fast network with 1.5x the filters (2.2x its FLOPs)",
        {"tasks": ["emotion"], "architecture": "wide"},
    ),
    "no-test-time-flip": (
        "no test-time flip (recipe: mean of the face and its mirror); the recipe-single models, re-scored",
        {"tasks": ["emotion"], "tta_flip": False},
    ),
    "multi-learned-weights": (
        "four tasks, task weights learned (Kendall et al. 2018)",
        {"tasks": MULTI, "loss_weights_mode": "learned"},
    ),
    "multi-pseudo-labels": (
        "four tasks, every training face given all four labels by the model then shipped (confident pseudo-labels only)",
        {"tasks": MULTI, "pseudo_labels": ["auto"]},
    ),
    "multi-pseudo-learned": (
        "four tasks, pseudo-labels and learned task weights together",
        {"tasks": MULTI, "pseudo_labels": ["auto"], "loss_weights_mode": "learned"},
    ),
    "multi-pseudo-soft": (
        "four tasks, soft pseudo-labels (the teacher's probabilities; same faces as the hard ones)",
        {"tasks": MULTI, "pseudo_labels": ["auto"], "pseudo_targets": "soft"},
    ),
}
# rows scored again from another row's models instead of trained: row -> (source row, what changes at scoring)
RESCORED = {"no-test-time-flip": "recipe-single"}
# rows compared with recipe-single over seeds: does multi-task training help emotion, and with which labels?
MULTI_ROWS = [
    "recipe-multi",
    "multi-learned-weights",
    "multi-pseudo-labels",
    "multi-pseudo-learned",
    "multi-pseudo-soft",
]
# (row, baseline) pairs compared over seeds below the table: every multi-task row against emotion alone, and the
# variants of pseudo-labelling against plain (hard) pseudo-labels
COMPARISONS = [(row, "recipe-single") for row in MULTI_ROWS] + [
    ("multi-pseudo-soft", "multi-pseudo-labels"),
    ("multi-pseudo-learned", "multi-pseudo-labels"),
]
DEFAULT_ROWS = ["recipe-single", "recipe-multi"]


def run_name(row: str, seed: int) -> str:
    return f"ablate-{row}-s{seed}"


def row_config(row: str, seed: int, data: Path, epochs: int) -> TrainConfig:
    overrides = dict(ROWS[row][1])
    datasets = [{"format": "fer2013", "root": str((data / "fer2013").resolve())}]
    if len(overrides.get("tasks", MULTI)) > 1:
        datasets.append({"format": "utkface", "root": str((data / "utkface").resolve())})
    return TrainConfig.from_preset(
        "recipe",
        **overrides,
        datasets=datasets,
        epochs=epochs,
        warmup_epochs=min(1.0, epochs / 6),
        seed=seed,
        name=run_name(row, seed),
        run_id=run_name(row, seed),
    )


def rescore(row: str, seed: int, data: Path, runs_dir: Path | None) -> None:
    """A scoring-time row: the source row's finished model of this seed, scored on the FER2013 test split with the
    row's change (no test-time flip), saved as runs/ablate-<row>-s<seed>/rescored.json."""
    from sklearn.metrics import accuracy_score, f1_score, recall_score

    from mtfer.core.backends import predict_arrays
    from mtfer.core.preprocess import PreprocessConfig
    from mtfer.core.tasks import TASK_NAMES, TASKS
    from mtfer.datasets.cache import prepare

    source = bundles.run_dir(run_name(RESCORED[row], seed), runs_dir)
    folder = bundles.run_dir(run_name(row, seed), runs_dir)
    if (folder / "rescored.json").exists() or not (source / bundles.METADATA_FILE).exists():
        return
    bundle = bundles.load_bundle(source)
    config = PreprocessConfig.from_dict(bundle.metadata["preprocessing"])
    prepared = prepare("fer2013", data / "fer2013", config=config, splits="test")
    index = prepared.splits == "test"
    y = prepared.labels[index][:, TASK_NAMES.index("emotion")]
    keep = y >= 0
    flip = bool(ROWS[row][1].get("tta_flip", True))
    p = predict_arrays(bundle.model, prepared.images[index][keep], flip=flip)["emotion"].argmax(1)
    names = TASKS["emotion"].classes
    recall = recall_score(y[keep], p, labels=list(range(len(names))), average=None, zero_division=0)
    history = pd.read_csv(source / bundles.HISTORY_FILE)
    record = {
        "test_accuracy": float(accuracy_score(y[keep], p)),
        "test_macro_f1": float(f1_score(y[keep], p, average="macro")),
        "test_disgust_recall": float(recall[names.index("disgust")]),
        "test_fear_recall": float(recall[names.index("fear")]),
        "epochs": len(history),
        "seconds": round(float(history["seconds"].sum())),
        "source": source.name,
    }
    folder.mkdir(parents=True, exist_ok=True)
    bundles.atomic_write_json(folder / "rescored.json", record)


def run_row(row: str, seed: int, data: Path, epochs: int, runs_dir: Path | None) -> None:
    if row in RESCORED:
        rescore(row, seed, data, runs_dir)
        return
    folder = bundles.run_dir(run_name(row, seed), runs_dir)
    progress = runs.read_progress(folder) if folder.exists() else {}
    if progress.get("state") == "finished":
        print(f"{folder.name}: already finished")
        return
    pid = progress.get("pid")
    if progress.get("state") in runs.ACTIVE_STATES and pid != os.getpid() and runs.pid_alive(pid):
        print(f"{folder.name}: being trained by process {pid}; left to it")  # two ablate.py sharing the rows
        return
    setup_logging(folder)
    resume = (folder / runs.CHECKPOINT_DIR / "state.json").exists()
    config = (
        TrainConfig.from_dict(bundles.read_json(folder / bundles.CONFIG_FILE))
        if resume
        else row_config(row, seed, data, epochs)
    )
    if not resume and folder.exists():
        shutil.rmtree(folder)
    if not resume and config.pseudo_labels == ["auto"]:  # the shipped model's sets, made first on a fresh checkout
        from mtfer.train.pseudo import ensure_pseudo_labels

        made = ensure_pseudo_labels(config.datasets, bundles.DEFAULT_BUNDLE)
        config = replace(config, pseudo_labels=[str(p.path) for p in made])
    train(config, folder, resume=resume)


def _recall(folder: Path, split: str, cls: str) -> float | None:
    path = folder / bundles.EVALUATION_DIR / f"fer2013-{split}" / "metrics.json"
    if not path.exists():
        return None
    per_class = json.loads(path.read_text())["tasks"]["emotion"].get("per_class", {})
    entry = per_class.get(cls) if isinstance(per_class, dict) else None
    return None if entry is None else entry.get("recall")


def collect(runs_dir: Path | None) -> list[dict]:
    records = []
    for row in ROWS:
        for folder in sorted(Path(runs_dir or bundles.default_runs_dir()).glob(f"ablate-{row}-s*")):
            if (folder / "rescored.json").exists():
                scored = bundles.read_json(folder / "rescored.json")
                records.append(
                    {"row": row, "seed": int(folder.name.rsplit("-s", 1)[1]), "val_accuracy": None, **scored}
                    | {f"utkface_{t}": None for t in ("gender", "race", "age")}
                )
                continue
            if not (folder / bundles.METADATA_FILE).exists():
                continue
            meta = bundles.read_json(folder / bundles.METADATA_FILE)
            m = meta["metrics"]
            history = pd.read_csv(folder / bundles.HISTORY_FILE)
            record = {
                "row": row,
                "seed": int(folder.name.rsplit("-s", 1)[1]),
                "epochs": len(history),
                "seconds": round(float(history["seconds"].sum())),
                "val_accuracy": m.get("fer2013-val", {}).get("emotion", {}).get("accuracy"),
                "test_accuracy": m.get("fer2013-test", {}).get("emotion", {}).get("accuracy"),
                "test_macro_f1": m.get("fer2013-test", {}).get("emotion", {}).get("macro_f1"),
                "test_disgust_recall": _recall(folder, "test", "disgust"),
                "test_fear_recall": _recall(folder, "test", "fear"),
            }
            for task in ("gender", "race", "age"):
                record[f"utkface_{task}"] = m.get("utkface-test", {}).get(task, {}).get("accuracy")
            records.append(record)
    return records


def _mean_std(values: list[float], percent: bool = True) -> str:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return "—"
    scale, unit, digits = (100, "%", 2) if percent else (1, "", 3)
    if len(values) == 1:
        return f"{scale * values[0]:.{digits}f}{unit}"
    return f"{scale * np.mean(values):.{digits}f} ± {scale * np.std(values, ddof=1):.{digits}f}{unit}"


def compare(
    row: str,
    multi: np.ndarray,
    single: np.ndarray,
    baseline: str = "recipe-single",
    paired: np.ndarray | None = None,
) -> str:
    """One sentence: `row` minus `baseline` on FER2013 test accuracy, with a Welch-style 95% t interval; and, given
    `paired` (the per-seed differences over the seeds both rows ran: the same validation carve and initialisation),
    the paired 95% t interval too."""
    from scipy import stats  # scikit-learn's own dependency

    diff = multi.mean() - single.mean()
    se = math.sqrt(multi.var(ddof=1) / len(multi) + single.var(ddof=1) / len(single))
    dof = len(multi) + len(single) - 2
    half = stats.t.ppf(0.975, dof) * se if se > 0 else 0.0
    verdict = "larger than the noise" if abs(diff) > half else "within the noise"
    text = (
        f"{row} minus {baseline}, FER2013 test emotion accuracy: {100 * diff:+.2f} points "
        f"(95% interval {100 * (diff - half):+.2f} to {100 * (diff + half):+.2f}, t with {dof} degrees of freedom, "
        f"{len(multi)} and {len(single)} seeds): {verdict}."
    )
    if paired is not None and len(paired) >= 2:
        mean, sd = paired.mean(), paired.std(ddof=1)
        half = stats.t.ppf(0.975, len(paired) - 1) * sd / math.sqrt(len(paired)) if sd > 0 else 0.0
        verdict = "larger than the noise" if abs(mean) > half else "within the noise"
        text += (
            f" Paired by seed ({len(paired)} seeds, {', '.join(f'{100 * d:+.2f}' for d in paired)}): "
            f"{100 * mean:+.2f} points, 95% interval {100 * (mean - half):+.2f} to {100 * (mean + half):+.2f}: "
            f"{verdict}."
        )
    return text + "\n"


def tables(records: list[dict]) -> str:
    frame = pd.DataFrame(records)
    if frame.empty:
        return "No ablation runs yet.\n"
    lines = [
        "| row | what changes | seeds | FER2013 val | FER2013 test | test macro-F1 | disgust / fear recall (test) "
        "| UTKFace gender / race / age (test) | epochs | wall time per run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row, (what, _) in ROWS.items():
        part = frame[frame["row"] == row]
        if part.empty:
            continue
        recalls = f"{_mean_std(part['test_disgust_recall'].tolist())} / {_mean_std(part['test_fear_recall'].tolist())}"
        utk = " / ".join(_mean_std(part[f"utkface_{t}"].tolist()) for t in ("gender", "race", "age"))
        lines.append(
            f"| {row} | {what} | {len(part)} | {_mean_std(part['val_accuracy'].tolist())} | "
            f"{_mean_std(part['test_accuracy'].tolist())} | {_mean_std(part['test_macro_f1'].tolist(), percent=False)} | "
            f"{recalls} | {utk if part['utkface_gender'].notna().any() else '—'} | {int(part['epochs'].max())} | "
            f"{part['seconds'].mean() / 60:.0f} min |"
        )
    text = "\n".join(lines) + "\n"
    for row, baseline in COMPARISONS:
        mine = frame[frame["row"] == row].dropna(subset=["test_accuracy"]).set_index("seed")["test_accuracy"]
        base = frame[frame["row"] == baseline].dropna(subset=["test_accuracy"]).set_index("seed")["test_accuracy"]
        if len(base) >= 2 and len(mine) >= 2:
            shared = sorted(set(mine.index) & set(base.index))
            paired = (mine[shared] - base[shared]).to_numpy()
            text += "\n" + compare(row, mine.to_numpy(), base.to_numpy(), baseline, paired)
    return text


def write(runs_dir: Path | None) -> str:
    records = collect(runs_dir)
    text = tables(records)
    (HERE / "ablation.md").write_text(text)
    (HERE / "ablation.json").write_text(json.dumps(records, indent=2) + "\n")
    page = HERE.parent / "docs" / "results.md"
    start, end = "<!-- ablation:start -->\n", "<!-- ablation:end -->"
    content = page.read_text()
    if start in content and end in content:
        head, rest = content.split(start, 1)
        page.write_text(head + start + text + end + rest.split(end, 1)[1])
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--runs", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=3, help="the fixed budget of every row")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--only", action="append", choices=sorted(ROWS), help="rows to run (repeatable)")
    parser.add_argument(
        "--table-only", action="store_true", help="train nothing: rebuild the tables (and docs/results.md) from runs"
    )
    args = parser.parse_args()
    if not args.table_only:
        for seed in args.seeds:  # seed by seed, so that an interrupted session still has paired rows
            for row in args.only or DEFAULT_ROWS:
                run_row(row, seed, args.data, args.epochs, args.runs)
                write(args.runs)
    print(write(args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
