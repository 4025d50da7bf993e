"""Pseudo-labels (mtfer.train.pseudo): the threshold rule, provenance, and the trainer filling only training labels."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import three_class_race_copy, tiny_run, write_fer_tree, write_utkface_tree

from mtfer.core import bundles
from mtfer.core.tasks import TASK_NAMES
from mtfer.train.pseudo import (
    RECORD_FILE,
    apply_pseudo_labels,
    auto_threshold,
    load_pseudo_labels,
    parse_threshold,
    pseudo_label,
    teacher_hash,
)

ATTRIBUTES = ["gender", "race", "age"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Tiny FER2013 and UTKFace trees, a cache for them, and a teacher trained for one epoch on random faces."""
    root = tmp_path_factory.mktemp("pseudo")
    return {
        "fer": write_fer_tree(root / "fer", per_class=3),
        "utk": write_utkface_tree(root / "utk", n=80),
        "teacher": tiny_run(root / "teacher"),
        "cache": root / "cache",
    }


def _prepared(world: dict, fmt: str):
    from mtfer.core.preprocess import PreprocessConfig
    from mtfer.datasets.cache import prepare

    meta = bundles.load_bundle(world["teacher"]).metadata
    return prepare(
        fmt, world[fmt[:3]], config=PreprocessConfig.from_dict(meta["preprocessing"]), cache_dir=world["cache"]
    )


def _quick_config(datasets: list[dict], **overrides):
    """Two steps of one epoch of the fast network on `datasets` with pseudo-labels "auto"."""
    from mtfer.train.config import TrainConfig

    settings = {"architecture": "fast", "epochs": 1, "batch_size": 16, "steps_per_epoch": 2, "augment": False}
    return TrainConfig(datasets=datasets, pseudo_labels=["auto"], **{**settings, **overrides})


def test_auto_threshold_is_the_lowest_confidence_reaching_the_target():
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([1, 1, 0, 1, 0], bool)
    # Accuracy of the faces at least this confident: 1, 1, 2/3, 3/4, 3/5.
    rule = auto_threshold(conf, correct, target_accuracy=0.75, min_faces=1)
    assert rule["threshold"] == 0.6 and rule["kept"] == 4 and rule["accuracy"] == 0.75 and rule["coverage"] == 0.8
    assert auto_threshold(conf, correct, 0.9, 1)["threshold"] == 0.8
    assert auto_threshold(conf, correct, 0.9, 3)["threshold"] is None  # no cut-off keeps 3 faces at 90%
    assert auto_threshold(conf, correct, 0.0, 1)["threshold"] == 0.5
    # Ties stay together: the cut-off at 0.9 keeps both 0.9 faces (one of them wrong).
    tied = auto_threshold(np.array([0.9, 0.9, 0.5]), np.array([1, 0, 1], bool), 0.6, 1)
    assert tied["threshold"] == 0.5 and tied["kept"] == 3
    assert auto_threshold(np.zeros(0), np.zeros(0, bool))["threshold"] is None
    assert parse_threshold("auto") == "auto" and parse_threshold("0.7") == 0.7
    for bad in ("1.5", "high", -0.1):
        with pytest.raises(ValueError, match="threshold"):
            parse_threshold(bad)


def test_pseudo_labels_fill_what_a_data_set_lacks_with_thresholds_from_validation_faces(world):
    from mtfer.core.backends import predict_arrays
    from mtfer.datasets.splits import make_splits

    teacher = bundles.load_bundle(world["teacher"])
    result = pseudo_label(
        world["teacher"],
        "fer2013",
        world["fer"],
        val=[{"format": "utkface", "root": str(world["utk"])}],
        target_accuracy=0.4,
        min_faces=2,
        cache_dir=world["cache"],
    )
    meta = result.meta
    assert meta["tasks"] == ATTRIBUTES
    # The thresholds are the rule applied to the teacher's predictions on UTKFace's VALIDATION faces, carved as the
    # teacher's trainer carves them (holdout, 10%, its seed).
    utk = _prepared(world, "utkface")
    val = make_splits([utk], "holdout", 0.1, 1337)["val"]
    probs = predict_arrays(teacher.model, val.images)
    for task in ATTRIBUTES:
        truth = val.labels[:, TASK_NAMES.index(task)]
        p = probs[task][truth >= 0]
        expected = auto_threshold(p.max(axis=1), p.argmax(axis=1) == truth[truth >= 0], 0.4, 2)
        assert meta["thresholds"][task] == expected["threshold"], task
        assert meta["validation"][task] == expected, task

    # Labels: the teacher's top class where it is confident enough, none for the task FER2013 has (emotion).
    fer = _prepared(world, "fer2013")
    assert list(result.sources) == list(fer.sources) and len(result) == len(fer)
    fer_probs = predict_arrays(teacher.model, fer.images)
    assert (result.labels[:, 0] == -1).all() and np.isnan(result.confidence[:, 0]).all()
    for task in ATTRIBUTES:
        c, threshold = TASK_NAMES.index(task), meta["thresholds"][task]
        keep = fer_probs[task].max(axis=1) >= threshold if threshold is not None else np.zeros(len(fer), bool)
        np.testing.assert_array_equal(result.labels[:, c], np.where(keep, fer_probs[task].argmax(axis=1), -1))
        np.testing.assert_allclose(result.confidence[:, c], fer_probs[task].max(axis=1), atol=1e-6)
        assert meta["counts"][task]["kept"] == int(keep.sum())
        assert sum(meta["counts"][task]["by_split"].values()) == int(keep.sum())

    # Provenance, beside the cache.
    digest = hashlib.sha256((Path(world["teacher"]) / bundles.METADATA_FILE).read_bytes()).hexdigest()
    assert result.path == (world["cache"] / "pseudo" / f"{Path(fer.path).name}-{digest[:12]}").resolve()
    assert teacher_hash(world["teacher"]) == digest[:12]
    stored = json.loads((result.path / "meta.json").read_text())
    assert stored["teacher"]["path"] == str(Path(world["teacher"]).resolve())
    assert stored["teacher"]["metadata_sha256"] == digest
    assert stored["rule"]["threshold"] == "auto" and stored["rule"]["target_accuracy"] == 0.4
    assert stored["dataset"]["format"] == "fer2013" and stored["created"]
    assert load_pseudo_labels(result.path / "meta.json").labels.tolist() == result.labels.tolist()

    # UTKFace gets emotion only: its true gender, race and age are never replaced, and its masked race (Indian,
    # Others: no class) is not guessed.
    utk_result = pseudo_label(world["teacher"], "utkface", world["utk"], threshold=0.0, cache_dir=world["cache"])
    assert utk_result.meta["tasks"] == ["emotion"]
    assert (utk_result.labels[:, 0] >= 0).all() and (utk_result.labels[:, 1:] == -1).all()
    assert utk_result.meta["thresholds"] == {"emotion": 0.0}


def test_pseudo_label_refuses_what_it_cannot_do(world):
    teacher = world["teacher"]
    # A teacher trained on arrays has no data sets of its own to take validation faces from.
    with pytest.raises(ValueError, match="--val"):
        pseudo_label(teacher, "fer2013", world["fer"], cache_dir=world["cache"])
    with pytest.raises(ValueError, match="emotion"):
        pseudo_label(teacher, "fer2013", world["fer"], threshold=0.5, tasks=["emotion"], cache_dir=world["cache"])
    with pytest.raises(ValueError, match="threshold"):
        pseudo_label(teacher, "fer2013", world["fer"], threshold="1.5", cache_dir=world["cache"])
    with pytest.raises(ValueError, match="no pseudo-labels"):
        load_pseudo_labels(world["cache"] / "nowhere")


def test_a_teacher_from_before_race_other_labels_no_race(world, tmp_path):
    old = three_class_race_copy(world["teacher"], tmp_path / "old")
    result = pseudo_label(old, "fer2013", world["fer"], threshold=0.3, cache_dir=world["cache"])
    # Its race answers would say that no face is "other": race is not its to fill, gender and age still are.
    assert result.meta["tasks"] == ["gender", "age"]
    assert (result.labels[:, TASK_NAMES.index("race")] == -1).all()
    with pytest.raises(ValueError, match="race"):
        pseudo_label(old, "fer2013", world["fer"], threshold=0.3, tasks=["race"], cache_dir=world["cache"])


def test_trainer_fills_only_training_labels_and_records_the_pseudo_labels(world, tmp_path, monkeypatch):
    from mtfer.datasets.splits import make_splits
    from mtfer.train.pipeline import load_prepared
    from mtfer.train.trainer import train

    monkeypatch.setenv("MTFER_CACHE", str(world["cache"]))
    made = {
        "fer2013": pseudo_label(world["teacher"], "fer2013", world["fer"], threshold=0.0),
        "utkface": pseudo_label(world["teacher"], "utkface", world["utk"], threshold=0.0),
    }
    datasets = [{"format": "fer2013", "root": str(world["fer"])}, {"format": "utkface", "root": str(world["utk"])}]
    config = _quick_config(datasets, loss_weights_mode="learned")

    splits = make_splits(load_prepared(config), config.protocol, config.val_fraction, config.seed)
    filled, record = apply_pseudo_labels(splits, ["auto"], datasets=datasets)
    assert filled["val"] is splits["val"] and filled["test"] is splits["test"]  # true labels only there
    before, after = splits["train"].labels, filled["train"].labels
    labelled = before >= 0
    np.testing.assert_array_equal(after[labelled], before[labelled])  # never overwritten
    is_fer = splits["train"].datasets == "fer2013"
    assert (after[is_fer][:, 1:] >= 0).all() and (after[~is_fer][:, 0] >= 0).all()
    race = TASK_NAMES.index("race")
    np.testing.assert_array_equal(after[~is_fer][:, race], before[~is_fer][:, race])  # masked race stays masked
    assert {r["path"] for r in record} == {str(p.path) for p in made.values()}
    by_set = {r["dataset"]["name"]: r["filled"] for r in record}
    assert by_set["fer2013"]["gender"] == int(is_fer.sum()) and by_set["utkface"]["emotion"] == int((~is_fer).sum())

    run = train(config, tmp_path / "run", install_signal_handler=False)
    meta = bundles.load_bundle(run).metadata
    assert {r["path"] for r in meta["pseudo_labels"]} == {str(p.path) for p in made.values()}
    assert all(r["teacher"]["metadata_sha256"] and r["thresholds"] for r in meta["pseudo_labels"])
    assert json.loads((run / RECORD_FILE).read_text())["pseudo_labels"] == meta["pseudo_labels"]
    assert meta["config"]["pseudo_labels"] == ["auto"] and set(meta["loss_weights_learned"]) == set(TASK_NAMES)
    # Evaluations score true labels only: FER2013's validation and test faces have no attribute, UTKFace's no emotion.
    for key, metrics in meta["metrics"].items():
        assert set(metrics) == ({"emotion"} if key.startswith("fer2013") else {"gender", "race", "age"}), key

    # Finishing the run again from its checkpoint (learned weights reloaded in safe mode) uses the same pseudo-labels.
    from mtfer.train.finalize import finish

    (run / bundles.METADATA_FILE).unlink()
    finish(run)
    again = bundles.load_bundle(run).metadata
    assert again["pseudo_labels"] == meta["pseudo_labels"]
    assert again["loss_weights_learned"] == pytest.approx(meta["loss_weights_learned"], rel=1e-5)


def test_soft_pseudo_labels_are_the_teachers_probabilities_on_the_same_faces(world, tmp_path, monkeypatch):
    from mtfer.datasets.splits import Split, make_splits
    from mtfer.train.config import TrainConfig
    from mtfer.train.pipeline import load_prepared, make_dataset
    from mtfer.train.trainer import train

    monkeypatch.setenv("MTFER_CACHE", str(world["cache"]))
    everything = pseudo_label(world["teacher"], "fer2013", world["fer"], threshold=0.0)
    median = float(np.median(everything.confidence[:, TASK_NAMES.index("age")]))
    fer_set = pseudo_label(world["teacher"], "fer2013", world["fer"], threshold=median)
    kept = fer_set.labels[:, TASK_NAMES.index("age")] >= 0
    assert 0 < kept.sum() < len(fer_set)  # a threshold that keeps some faces and not others
    pseudo_label(world["teacher"], "utkface", world["utk"], threshold=0.0)
    datasets = [{"format": "fer2013", "root": str(world["fer"])}, {"format": "utkface", "root": str(world["utk"])}]
    config = TrainConfig(datasets=datasets, architecture="fast", epochs=1, batch_size=16, steps_per_epoch=2)
    splits = make_splits(load_prepared(config), config.protocol, config.val_fraction, config.seed)

    hard, _ = apply_pseudo_labels(splits, ["auto"], datasets=datasets)
    soft, record = apply_pseudo_labels(splits, ["auto"], datasets=datasets, soft=True)
    assert hard["train"].soft is None and {r["targets"] for r in record} == {"soft"}
    np.testing.assert_array_equal(soft["train"].labels, hard["train"].labels)  # the same faces get a label
    train_split, before = soft["train"], splits["train"].labels
    index = {s: i for i, s in enumerate(fer_set.sources.tolist())}
    for task in ATTRIBUTES:
        c, target = TASK_NAMES.index(task), train_split.soft[task]
        filled = (before[:, c] < 0) & (train_split.labels[:, c] >= 0)
        assert np.isnan(target[~filled]).all()  # true labels (and faces left unlabelled) keep no soft target
        np.testing.assert_allclose(target[filled].sum(axis=1), 1.0, atol=1e-5)
        fer_rows = np.flatnonzero(filled & (train_split.datasets == "fer2013"))
        teacher = fer_set.probabilities(task)[[index[s] for s in train_split.sources[fer_rows]]]
        np.testing.assert_allclose(target[fer_rows], teacher / teacher.sum(axis=1, keepdims=True), atol=1e-6)
        np.testing.assert_array_equal(target[fer_rows].argmax(axis=1), train_split.labels[fer_rows, c])
    assert np.isnan(train_split.soft["emotion"][train_split.datasets == "fer2013"]).all()  # FER2013's own labels

    # The pipeline's target is the soft row where there is one, else the one-hot label; weights (masks) as for hard.
    _, ys, ws = next(
        iter(make_dataset(train_split, TASK_NAMES, len(train_split), training=False, augment=False, seed=0))
    )
    _, yh, wh = next(
        iter(make_dataset(hard["train"], TASK_NAMES, len(train_split), training=False, augment=False, seed=0))
    )
    for task in TASK_NAMES:
        target, has = train_split.soft[task], ~np.isnan(train_split.soft[task][:, 0])
        np.testing.assert_allclose(ys[task].numpy()[has], target[has], atol=1e-6)
        np.testing.assert_array_equal(ys[task].numpy()[~has], yh[task].numpy()[~has])
        np.testing.assert_array_equal(ws[task].numpy(), wh[task].numpy())
    assert train_split.subset(np.arange(3)).soft["age"].shape == (3, 5)
    with pytest.raises(ValueError, match="soft targets"):
        Split.concat([train_split, train_split])

    # A soft run records its targets; a damaged probabilities file is refused with a clear message.
    run = train(
        _quick_config(datasets, pseudo_targets="soft"),
        tmp_path / "soft",
        install_signal_handler=False,
    )
    meta = bundles.load_bundle(run).metadata
    assert meta["config"]["pseudo_targets"] == "soft" and {r["targets"] for r in meta["pseudo_labels"]} == {"soft"}
    np.save(fer_set.path / "probabilities_age.npy", np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="probabilities_age.npy is <f4 \\[2, 5\\]"):
        load_pseudo_labels(fer_set.path).probabilities("age")
    with pytest.raises(ValueError, match="pseudo_targets"):
        TrainConfig(pseudo_targets="fuzzy")


def test_distillation_mixes_the_teachers_probabilities_into_true_labels(world, tmp_path, monkeypatch):
    from mtfer.datasets.splits import make_splits
    from mtfer.train.config import TrainConfig
    from mtfer.train.pipeline import load_prepared
    from mtfer.train.trainer import train

    cache = tmp_path / "cache"
    shutil.copytree(world["cache"], cache, ignore=shutil.ignore_patterns("pseudo"))  # this test's sets only
    monkeypatch.setenv("MTFER_CACHE", str(cache))
    fer_set = pseudo_label(world["teacher"], "fer2013", world["fer"], threshold=0.0)
    utk_set = pseudo_label(world["teacher"], "utkface", world["utk"], threshold=0.0)
    # The teacher's view of every task it predicts is kept, the ones the data set has labels of included.
    assert fer_set.meta["probabilities"] == list(TASK_NAMES) == utk_set.meta["probabilities"]
    datasets = [{"format": "fer2013", "root": str(world["fer"])}, {"format": "utkface", "root": str(world["utk"])}]
    config = _quick_config(datasets, pseudo_targets="soft", distill=0.3)
    splits = make_splits(load_prepared(config), config.protocol, config.val_fraction, config.seed)
    out, record = apply_pseudo_labels(splits, ["auto"], datasets=datasets, soft=True, distill=0.3)
    assert {r["distill"] for r in record} == {0.3}
    train_split, truth = out["train"], splits["train"].labels
    sets = {"fer2013": fer_set, "utkface": utk_set}
    for task in TASK_NAMES:
        c, target = TASK_NAMES.index(task), train_split.soft[task]
        for name, p in sets.items():
            rows = np.flatnonzero((train_split.datasets == name) & (truth[:, c] >= 0))
            if not len(rows):
                continue
            index = {s: i for i, s in enumerate(p.sources.tolist())}
            teacher = p.probabilities(task)[[index[s] for s in train_split.sources[rows]]]
            teacher = teacher / teacher.sum(axis=1, keepdims=True)
            one_hot = np.eye(target.shape[1])[truth[rows, c]]
            np.testing.assert_allclose(target[rows], 0.7 * one_hot + 0.3 * teacher, atol=1e-6)
    # Without distillation the true labels keep their one-hot targets.
    plain, _ = apply_pseudo_labels(splits, ["auto"], datasets=datasets, soft=True)
    assert np.isnan(plain["train"].soft["emotion"][train_split.datasets == "fer2013"]).all()

    run = train(config, tmp_path / "student", install_signal_handler=False)
    meta = bundles.load_bundle(run).metadata
    assert meta["config"]["distill"] == 0.3 and {r["distill"] for r in meta["pseudo_labels"]} == {0.3}

    # Sets made before the teacher's labelled-task probabilities were kept cannot teach them: refused, not ignored.
    stored = json.loads((fer_set.path / "meta.json").read_text())
    del stored["arrays"]["probabilities_emotion"]
    (fer_set.path / "meta.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match=r"\['emotion'\].*make them again"):
        apply_pseudo_labels(splits, ["auto"], datasets=datasets, soft=True, distill=0.3)
    with pytest.raises(ValueError, match="pseudo_targets 'soft'"):
        TrainConfig(distill=0.3)
    with pytest.raises(ValueError, match="between 0 and 1"):
        TrainConfig(pseudo_labels=["auto"], pseudo_targets="soft", distill=1.5)


def test_ensure_makes_pseudo_labels_only_where_none_exist(world, tmp_path, monkeypatch):
    from mtfer.train import pseudo
    from mtfer.train.pseudo import ensure_pseudo_labels, find_pseudo_labels

    cache = tmp_path / "fresh-cache"
    datasets = [{"format": "fer2013", "root": str(world["fer"])}, {"format": "utkface", "root": str(world["utk"])}]
    made = ensure_pseudo_labels(datasets, world["teacher"], threshold=0.0, cache_dir=cache)
    assert [p.dataset for p in made] == ["fer2013", "utkface"]
    assert [p.meta["tasks"] for p in made] == [ATTRIBUTES, ["emotion"]]
    monkeypatch.setattr(pseudo, "pseudo_label", lambda *a, **k: pytest.fail("made again"))
    again = ensure_pseudo_labels(datasets, world["teacher"], threshold=0.0, cache_dir=cache)
    assert [p.path for p in again] == [p.path for p in made]  # found, not made again
    assert len(find_pseudo_labels("fer2013", world["fer"], cache)) == 1

    # Another teacher's sets do not count: a chosen teacher gets its own (reproduce.py --teacher).
    other = tmp_path / "other-teacher"
    shutil.copytree(world["teacher"], other)
    meta = bundles.read_json(other / bundles.METADATA_FILE)
    bundles.atomic_write_json(other / bundles.METADATA_FILE, {**meta, "created": "2026-12-01T09:00:00+00:00"})
    monkeypatch.undo()
    theirs = ensure_pseudo_labels(datasets, other, threshold=0.0, cache_dir=cache)
    assert {p.path for p in theirs}.isdisjoint(p.path for p in made)
    assert {p.meta["teacher"]["metadata_sha256"][:12] for p in theirs} == {pseudo.teacher_hash(other)}
    assert len(find_pseudo_labels("fer2013", world["fer"], cache)) == 2


def test_command_line_makes_pseudo_labels_and_passes_them_to_the_trainer(world, monkeypatch, capsys):
    from mtfer.cli import build_parser, main
    from mtfer.cli.train_cmds import train_config_from_args

    monkeypatch.setenv("MTFER_CACHE", str(world["cache"]))
    common = ["pseudo-label", "--model", str(world["teacher"])]
    assert main([*common, "--format", "utkface", "--data", str(world["utk"]), "--threshold", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "emotion:" in out and "threshold 0.5000" in out and str(world["cache"] / "pseudo") in out
    # "auto" needs labelled validation faces: this teacher has no data sets of its own and none are given.
    assert main([*common, "--format", "fer2013", "--data", str(world["fer"])]) == 2
    assert "--val" in capsys.readouterr().err
    args = build_parser().parse_args(["train", "--pseudo-labels", "auto", "--pseudo-labels", "some/folder"])
    assert train_config_from_args(args).pseudo_labels == ["auto", "some/folder"]
    assert train_config_from_args(build_parser().parse_args(["train"])).pseudo_labels is None
    soft = build_parser().parse_args(["train", "--pseudo-labels", "auto", "--pseudo-targets", "soft"])
    assert train_config_from_args(soft).pseudo_targets == "soft"
    assert train_config_from_args(build_parser().parse_args(["train"])).pseudo_targets == "hard"
    distilled = build_parser().parse_args(
        ["train", "--pseudo-labels", "auto", "--pseudo-targets", "soft", "--distill", "0.5"]
    )
    assert train_config_from_args(distilled).distill == 0.5
    assert train_config_from_args(build_parser().parse_args(["train"])).distill == 0.0
    seeds = train_config_from_args(build_parser().parse_args(["train", "--seed", "7", "--split-seed", "1337"]))
    assert (seeds.seed, seeds.split_seed, seeds.carving_seed) == (7, 1337, 1337)
    assert train_config_from_args(build_parser().parse_args(["train", "--seed", "7"])).carving_seed == 7
