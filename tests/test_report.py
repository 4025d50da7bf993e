"""The pure helpers behind the Home and Evaluate pages: a model's readable name and card, comparisons with the
paper, names as people write them, the learning-rate axis, URL slugs, and a model's training lineage (runs that
continued other runs). No Streamlit, no TensorFlow except where a TrainConfig is built."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from mtfer.app import cards, figures, wording
from mtfer.assess.evaluation import confusion_frame
from mtfer.core import bundles
from mtfer.core.tasks import TASKS
from mtfer.store import lineage, settings

# --- names --------------------------------------------------------------------------------------------------


def test_data_sets_and_evaluations_as_people_write_them():
    assert [wording.dataset_title(f) for f in ("fer2013", "fer2013-csv", "utkface", "rafdb", "mine")] == [
        "FER2013",
        "FER2013",
        "UTKFace",
        "RAF-DB",
        "mine",
    ]
    assert wording.evaluation_title("fer2013-test") == "FER2013, test images"
    assert wording.evaluation_title("utkface-val") == "UTKFace, validation images"
    assert (
        wording.evaluation_title("default-20261130-101500-utkface-val")
        == "UTKFace, validation images, evaluated 30 Nov 2026 at 10:15"
    )
    assert wording.evaluation_title("default-20261130-101500.2-fer2013-csv-all").startswith("FER2013, all images")
    assert wording.evaluation_title("custom") == "custom"
    assert wording.evaluation_split("rafdb-test") == "test" and wording.evaluation_split("custom") is None


def test_confusion_frames_and_captions_use_display_names():
    metrics = {
        "tasks": {"race": {"classes": list(TASKS["race"].classes[:3]), "confusion": [[1, 0, 0], [0, 2, 0], [0, 0, 3]]}}
    }
    frame = wording.display_frame(confusion_frame(metrics, "race"), "race")
    assert list(frame.index) == ["Caucasian", "African American", "Asian"] == list(frame.columns)
    assert frame.loc["African American", "African American"] == 2
    per_class = pd.DataFrame({"f1": [0.5]}, index=pd.Index(["0-3"], name="class"))
    assert list(wording.display_frame(per_class, "age").index) == ["0-3 years"]
    row = {"emotion_true": "fear", "emotion_pred": "disgust", "emotion_confidence": 0.996}
    assert figures.gallery_caption(row, "emotion") == "True: Fear → predicted: Disgust (100% sure)"
    row = {"race_true": "african_american", "race_pred": "asian", "race_confidence": "0.61"}
    assert figures.gallery_caption(row, "race") == "True: African American → predicted: Asian (61% sure)"


# --- the model card -------------------------------------------------------------------------------------------

OLD_BUNDLE = {  # the keys of the bundle shipped before the demo polish (no title, description or lineage)
    "tasks": {t: list(TASKS[t].classes) for t in TASKS},
    "architecture": "fast",
    "datasets": [{"format": "fer2013", "root": "/d/fer2013"}, {"format": "utkface", "root": "/d/utkface"}],
    "protocol": "holdout",
    "optimistic": False,
    "samples": {"train": 43084, "val": 4787, "test": 9364},
    "train_seconds": 1846.5,
    "machine": "x86_64 2 cpu",
    "created": "2026-11-28T22:41:37+00:00",
    "config": {"init_from": "/nowhere/runs/reproduce-multi-holdout"},
    "metrics": {
        "fer2013-test": {"emotion": {"accuracy": 0.5213, "n": 7178}},
        "utkface-test": {"gender": {"accuracy": 0.8253, "n": 2186}},
    },
}


def test_model_card_of_an_old_bundle_reads_like_a_sentence(tmp_path):
    folder = tmp_path / "default"
    folder.mkdir()
    pd.DataFrame({"epoch": range(1, 16), "seconds": [120.0] * 15}).to_csv(folder / bundles.HISTORY_FILE, index=False)
    card = cards.model_card(OLD_BUNDLE, folder)
    assert card.name == "Multi-task network (fast), trained 28 Nov 2026"
    assert card.description == (
        "One network that reads emotion, gender, race and age group from a face, taught with FER2013 and UTKFace."
    )
    assert card.folder == "default"
    facts = dict(card.facts)
    assert facts["Predicts"] == "Emotion, gender, race and age group, all at once (multi-task)"
    assert facts["Taught with"] == "FER2013 (emotions) and UTKFace (gender, race, age)"
    assert facts["Trained"] == "28 November 2026"
    assert facts["Faces used"].startswith("43,084 to learn from, 4,787 to check progress")
    # It continued a run that is gone: only its own 15 epochs and 31 minutes are known, and it says so.
    assert facts["Training time"].startswith("31 min for its last 15 epochs on a 2-core computer")
    assert "continued an earlier run whose time is not recorded" in facts["Training time"]
    assert not any("fer2013 (fer2013)" in v or "T22:41" in v for v in facts.values())


def test_model_card_uses_the_title_description_and_whole_lineage_of_a_new_bundle(tmp_path):
    folder = tmp_path / "default"
    folder.mkdir()
    pd.DataFrame({"epoch": range(1, 16)}).to_csv(folder / bundles.HISTORY_FILE, index=False)
    metadata = {
        **OLD_BUNDLE,
        "title": "Emotion, gender, race and age reader",
        "description": "Our demo model.",
        "lineage": [{"name": "first", "epochs": 10, "train_seconds": 1620.0, "history": [{"epoch": 1}] * 10}],
    }
    card = cards.model_card(metadata, folder)
    assert (card.name, card.description) == ("Emotion, gender, race and age reader", "Our demo model.")
    # 1620 + 1846.5 s = 57.8 min for 25 epochs, rounded to 58
    assert dict(card.facts)["Training time"] == (
        "58 min in all on a 2-core computer: 25 epochs, 10 in an earlier run and 15 more in this one"
    )
    single = {"tasks": {"emotion": []}, "architecture": "paper", "created": "2026-11-30T08:00:00+00:00"}
    assert cards.model_title(single) == "Emotion-only network (the paper's design), trained 30 Nov 2026"
    assert cards.model_title({"tasks": {}, "title": "  "}) == "Single-task network"
    assert wording.format_date("not a date") is None and wording.format_date("2026-11-30") == "30 November 2026"
    assert (
        wording.format_duration(1846.5, "minutes") == "31 min"
        and wording.format_duration(3725, "minutes") == "1 h 02 min"
    )
    assert wording.format_duration(42, "minutes") == "42 s" and wording.format_duration(None, "minutes") == "unknown"


def test_choice_titles_and_url_slugs(tmp_path):
    meta = {"tasks": {"emotion": [], "age": []}, "architecture": "fast", "created": "2026-11-30T08:00:00+00:00"}
    assert (
        cards.choice_title("active", "default", meta) == "Active model · Multi-task network (fast), trained 30 Nov 2026"
    )
    assert cards.choice_title("run", "r1", meta) == "Run r1 · Multi-task network (fast), trained 30 Nov 2026"
    assert cards.choice_title("run", "r1", {}) == "Run r1"
    choices = [
        settings.ModelChoice("Active model (default)", tmp_path / "default", "active"),
        settings.ModelChoice("Run r1", tmp_path / "runs" / "r1", "run"),
    ]
    assert [c.slug for c in choices] == ["active", "r1"]
    assert settings.find_choice(choices, "r1") is choices[1]
    assert settings.find_choice(choices, "default") is choices[0]  # the shipped model, listed as the active one
    assert settings.find_choice(choices, "gone") is None and settings.find_choice(choices, None) is None


# --- the paper, compared calmly ---------------------------------------------------------------------------------


def test_a_difference_to_the_paper_is_coloured_only_like_for_like():
    held_out = cards.accuracy_cards("fer2013-test", {"emotion": {"accuracy": 0.5213, "n": 7178}}, True, "holdout")
    (card,) = held_out
    assert card.title == "Emotion · FER2013"
    assert not card.comparable and card.delta is None
    assert (card.badge, card.badge_color) == ("Paper: 67.9%", "off")  # grey, no "-15.8 pts"
    assert card.paper_text == (
        "Paper: 67.9% on FER2013 (single-task) with its own optimistic split; not directly comparable."
    )
    other_data = cards.accuracy_cards("utkface-test", {"age": {"accuracy": 0.73, "n": 10}}, True, "holdout")[0]
    assert other_data.badge_color == "off" and "a different data set" in other_data.paper_text
    assert other_data.title == "Age group · UTKFace"
    val = cards.accuracy_cards("utkface-val", {"age": {"accuracy": 0.73, "n": 10}}, True, "holdout")[0]
    assert val.title == "Age group · UTKFace (validation images)"
    # The paper's protocol on the paper's data set and setting: like for like, coloured.
    same = cards.accuracy_cards("rafdb-val", {"emotion": {"accuracy": 0.80, "n": 10}}, True, "paper")[0]
    assert same.comparable and same.badge == "+0.7 pts vs paper" and same.badge_color == "normal"
    assert same.paper_text.startswith("Same data set and protocol as the paper's 79.3%")
    # ... but not its test split, another setting, or an unknown protocol.
    assert not cards.accuracy_cards("rafdb-test", {"emotion": {"accuracy": 0.8, "n": 1}}, True, "paper")[0].comparable
    assert not cards.accuracy_cards("fer2013-val", {"emotion": {"accuracy": 0.8, "n": 1}}, True, "paper")[0].comparable
    assert cards.accuracy_cards("fer2013-val", {"emotion": {"accuracy": 0.7, "n": 1}}, False, "paper")[0].comparable
    assert not cards.accuracy_cards("rafdb-val", {"emotion": {"accuracy": 0.8, "n": 1}}, True)[0].comparable
    none = cards.accuracy_cards("folders-test", {"emotion": {"accuracy": 0.5, "n": 3}}, True)[0]
    assert none.badge is None and none.paper_text == "The paper reports no figure for this."


# --- charts -----------------------------------------------------------------------------------------------------


def test_learning_rates_read_as_numbers_on_a_readable_axis():
    assert [wording.format_rate(v) for v in (3e-4, 1e-3, 2e-3, 6e-5, 1e-6, 0.05, 0.0)] == [
        "3×10⁻⁴",
        "10⁻³",
        "2×10⁻³",
        "6×10⁻⁵",
        "10⁻⁶",
        "0.05",
        "0",
    ]
    constant = figures.rate_axis([3e-4] * 15)  # plotly's own log ticks read "1, 1e-3, 5, 2, 1e-4, 5" here
    assert constant["type"] == "linear" and constant["ticktext"] == ["0", "10⁻⁴", "2×10⁻⁴", "3×10⁻⁴"]
    plateau = figures.rate_axis([3e-4, 3e-4, 6e-5, 1.2e-5, 2.4e-6])
    assert plateau["type"] == "log" and plateau["ticktext"][-1] == "2×10⁻⁴" and "10⁻⁵" in plateau["ticktext"]
    assert all(math.log10(v) >= plateau["range"][0] for v in plateau["tickvals"])
    cosine = figures.rate_axis([2e-3 * (1 + math.cos(math.pi * i / 30)) / 2 for i in range(30)])
    assert cosine["type"] == "log" and cosine["ticktext"] == ["10⁻⁵", "10⁻⁴", "10⁻³"]
    with_zero = figures.rate_axis([2e-3, 1e-3, 0.0])
    assert with_zero["type"] == "linear" and with_zero["range"][0] == 0
    assert figures.rate_axis([]) == {}
    history = pd.DataFrame({"epoch": [1, 2, 3], "learning_rate": [3e-4, 3e-4, 3e-4]})
    fig = figures.learning_rate_figure(history, starts=[(3, "second")])
    assert list(fig.layout.yaxis.ticktext) == ["0", "10⁻⁴", "2×10⁻⁴", "3×10⁻⁴"]
    assert [s.x0 for s in fig.layout.shapes] == [2.5]  # the continuation starts before epoch 3
    assert fig.layout.annotations[0].text == "training continued"


def test_history_figures_mark_where_training_continued():
    history = pd.DataFrame(
        {"epoch": [1, 2, 3, 4], "emotion_loss": [2, 1.8, 1.7, 1.6], "emotion_accuracy": [0.2, 0.3, 0.35, 0.4]}
    )
    fig = figures.history_figure(history, "emotion", [(3, "second")])
    assert fig.layout.title.text == "Emotion" and len(fig.layout.shapes) == 2  # one line in each panel
    assert figures.history_figure(history, "age").layout.title.text == "Age group"
    assert not figures.history_figure(history, "emotion").layout.shapes
    assert list(fig.layout.xaxis.range) == [0.5, 4.5]  # the axis ends with the last epoch


def test_group_figures_name_groups_and_show_the_overall_accuracy():
    groups = pd.DataFrame(
        {"task": ["gender"] * 3 + ["age"], "attribute": ["race", "race", "age", "gender"],
         "group": ["african_american", "asian", "70+", "male"], "n": [10, 1200, 5, 7],
         "accuracy": [0.8, 0.9, 0.6, 0.5]}
    )  # fmt: skip
    fig = figures.slices_figure(groups, "gender")
    assert fig.layout.title.text == "Gender accuracy by group"
    assert [a.text for a in fig.layout.annotations] == ["By race", "By age group"]
    assert list(fig.data[0].x) == ["African<br>American<br>10<br>faces", "Asian<br>1,200<br>faces"]
    assert list(fig.data[1].x) == ["70+<br>years<br>5<br>faces"]
    # With the accuracy on all faces, each panel starts with it, in a darker colour.
    fig = figures.slices_figure(groups, "gender", overall=0.85, overall_n=1215)
    assert list(fig.data[1].x) == ["<b>All faces</b><br>1,215<br>faces", "70+<br>years<br>5<br>faces"]
    assert list(fig.data[1].y) == [0.85, 0.6] and list(fig.data[1].text) == ["85%", "60%"]
    assert fig.data[1].marker.color[0] == figures.OVERALL_COLOR != fig.data[1].marker.color[1]
    assert figures.slices_figure(groups, "race") is None
    # For a page's columns: the same panels one figure each, the heading apart.
    heading, panels = figures.slices_panels(groups, "gender", overall=0.85, overall_n=1215)
    assert heading == "Gender accuracy by group" and [p.layout.annotations[0].text for p in panels] == [
        "By race",
        "By age group",
    ]
    assert [list(p.data[0].x) for p in panels] == [list(t.x) for t in fig.data] and not panels[0].layout.title.text
    assert figures.slices_panels(groups, "race") == ("", [])


# --- lineage ------------------------------------------------------------------------------------------------------


def _run(folder: Path, epochs: int, seconds: float | None = None, init_from: str | None = None, **meta) -> Path:
    """A run folder with history.csv (accuracy rising by 0.1 an epoch, 60 s each), metadata.json and config.json."""
    folder.mkdir(parents=True)
    history = pd.DataFrame(
        {"epoch": range(1, epochs + 1), "val_emotion_accuracy": np.linspace(0.1, 0.1 * epochs, epochs),
         "learning_rate": [3e-4] * epochs, "seconds": [60.0] * epochs}
    )  # fmt: skip
    history.to_csv(folder / bundles.HISTORY_FILE, index=False)
    (folder / bundles.CONFIG_FILE).write_text(json.dumps({"init_from": init_from}))
    metadata = {"train_seconds": seconds, "config": {"init_from": init_from}, **meta}
    (folder / bundles.METADATA_FILE).write_text(json.dumps(metadata))
    return folder


def test_parent_lineage_follows_init_from_back_to_the_first_run(tmp_path):
    runs_dir = tmp_path / "runs"
    first = _run(runs_dir / "first", 10, 600.0)
    second = _run(runs_dir / "second", 5, 300.0, init_from=str(first))
    stages = lineage.parent_lineage(str(second), runs_dir)
    assert [(s["name"], s["epochs"], s["train_seconds"]) for s in stages] == [
        ("first", 10, 600.0),
        ("second", 5, 300.0),
    ]
    assert len(stages[0]["history"]) == 10 and stages[0]["history"][0]["epoch"] == 1
    json.dumps(stages, allow_nan=False)  # JSON-able as it goes into metadata.json
    # By run id too, and a parent that is gone is recorded by name.
    assert [s["name"] for s in lineage.parent_lineage("second", runs_dir)] == ["first", "second"]
    (gone,) = lineage.parent_lineage(str(tmp_path / "elsewhere" / "lost-run"), runs_dir)
    assert gone == {"name": "lost-run", "path": str(tmp_path / "elsewhere" / "lost-run"), "epochs": None,
                    "train_seconds": None, "history": []}  # fmt: skip
    assert lineage.parent_lineage(None, runs_dir) == []


def test_parent_lineage_trusts_what_a_parent_recorded_and_finds_moved_runs(tmp_path):
    runs_dir = tmp_path / "runs"
    recorded = [{"name": "zero", "epochs": 2, "train_seconds": 10.0, "history": [{"epoch": 1}, {"epoch": 2}]}]
    _run(runs_dir / "first", 3, 30.0, lineage=recorded)
    # The parent is named by a path from another machine: found by its name under the runs folder.
    stages = lineage.parent_lineage("/old/machine/runs/first", runs_dir)
    assert [s["name"] for s in stages] == ["zero", "first"]
    # A cycle (a run continued from itself) ends instead of looping.
    loop = _run(runs_dir / "loop", 1, 5.0, init_from=str(runs_dir / "loop"))
    assert [s["name"] for s in lineage.parent_lineage(str(loop), runs_dir)] == ["loop", "loop"]


def test_read_lineage_numbers_epochs_continuously(tmp_path):
    runs_dir = tmp_path / "runs"
    first = _run(runs_dir / "first", 10, 600.0)
    second = _run(runs_dir / "second", 15, 900.0, init_from=str(first))
    found = lineage.read_lineage(second, runs_dir=runs_dir)  # an old bundle: found through init_from
    assert found.continued and not found.missing
    assert list(found.history["epoch"]) == list(range(1, 26))
    assert list(found.history["stage"]) == ["first"] * 10 + ["second"] * 15
    assert found.starts == [(11, "second")]
    assert (found.total_epochs, found.total_seconds) == (25, 1500.0)
    # A new bundle records its lineage: the parent's folder is no longer needed.
    metadata = json.loads((second / bundles.METADATA_FILE).read_text())
    metadata["lineage"] = lineage.parent_lineage(str(first), runs_dir)
    (second / bundles.METADATA_FILE).write_text(json.dumps(metadata))
    for path in first.iterdir():
        path.unlink()
    first.rmdir()
    recorded = lineage.read_lineage(second, runs_dir=runs_dir)
    assert list(recorded.history["epoch"]) == list(range(1, 26)) and recorded.total_seconds == 1500.0


def test_read_lineage_of_a_model_whose_parent_is_gone(tmp_path):
    model = _run(tmp_path / "default", 15, 1846.5, init_from="/work/main/runs/reproduce-multi-holdout")
    found = lineage.read_lineage(model, runs_dir=tmp_path / "runs")
    assert found.continued and [s.name for s in found.missing] == ["reproduce-multi-holdout"]
    assert list(found.history["epoch"]) == list(range(1, 16)) and found.starts == []
    assert found.total_epochs is None and found.total_seconds is None
    alone = lineage.read_lineage(_run(tmp_path / "alone", 3, 90.0), runs_dir=tmp_path / "runs")
    assert not alone.continued and alone.total_epochs == 3 and alone.total_seconds == 90.0
    empty = lineage.read_lineage(tmp_path / "nothing")
    assert empty.history.empty and not empty.continued


def test_bundle_metadata_records_the_lineage(tmp_path, monkeypatch):
    from mtfer.train.config import TrainConfig
    from mtfer.train.finalize import bundle_metadata

    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("MTFER_RUNS", str(runs_dir))
    _run(runs_dir / "first", 4, 120.0)
    config = TrainConfig(architecture="fast", init_from="first")
    metadata = bundle_metadata(config, "float32", {"train": [0] * 8}, 60.0)
    assert [(s["name"], s["epochs"], s["train_seconds"]) for s in metadata["lineage"]] == [("first", 4, 120.0)]
    json.dumps(metadata, allow_nan=False)
    assert bundle_metadata(TrainConfig(architecture="fast"), "float32", {"train": [0]}, 1.0)["lineage"] == []
