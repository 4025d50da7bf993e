"""Ensembles (mtfer.train.ensemble): weights chosen on validation faces, one bundle that averages its members exactly,
and the refusals that keep the choice honest."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_run, tiny_splits, write_fer_tree, write_utkface_tree

from mtfer.core import bundles
from mtfer.core.tasks import TASK_NAMES
from mtfer.train.ensemble import ENSEMBLE_KEY, EnsembleError, choose_weights, combine


def _one_hot_like(truth: np.ndarray, classes: int, right: np.ndarray, sure: float) -> np.ndarray:
    """Probabilities that put `sure` on the true class where `right`, on the next class elsewhere."""
    top = np.where(right, truth, (truth + 1) % classes)
    p = np.full((len(truth), classes), (1 - sure) / (classes - 1))
    p[np.arange(len(truth)), top] = sure
    return p


def test_weights_go_to_the_member_that_is_right_and_split_where_each_is_right_half_the_time():
    rng = np.random.default_rng(0)
    n = 200
    labels = np.full((n, 4), -1)
    labels[:, 0] = rng.integers(0, 7, n)  # emotion on every face, gender on none
    truth = labels[:, 0]
    good = _one_hot_like(truth, 7, np.ones(n, bool), 0.6)
    bad = _one_hot_like(truth, 7, np.zeros(n, bool), 0.6)
    chosen = choose_weights([{"emotion": bad}, {"emotion": good}], labels, ["emotion", "gender"])
    assert chosen["emotion"] == [0.0, 1.0]
    assert chosen["gender"] == [0.5, 0.5]  # no labelled faces: equal weights

    # Each surely right on its own half and unsurely wrong on the other: only a mix is right everywhere.
    half = (np.arange(n) < n // 2)[:, None]
    a = np.where(half, _one_hot_like(truth, 7, np.ones(n, bool), 0.9), _one_hot_like(truth, 7, np.zeros(n, bool), 0.3))
    b = np.where(half, _one_hot_like(truth, 7, np.zeros(n, bool), 0.3), _one_hot_like(truth, 7, np.ones(n, bool), 0.9))
    w = choose_weights([{"emotion": a}, {"emotion": b}], labels, ["emotion"])["emotion"]
    mix = w[0] * a + w[1] * b
    assert (mix.argmax(1) == truth).all() and 0 < w[0] < 1 and sum(w) == pytest.approx(1)
    three = choose_weights([{"emotion": a}] * 3, labels, ["emotion"])
    assert three["emotion"] == pytest.approx([1 / 3] * 3)
    with pytest.raises(EnsembleError, match="two members"):
        choose_weights([{"emotion": a}], labels, ["emotion"])


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ensemble")
    return {
        "a": tiny_run(root / "a"),
        "b": tiny_run(root / "b", learning_rate=3e-3),  # trained differently, on the same split
        "root": root,
    }


def test_an_ensemble_bundle_is_the_weighted_average_of_its_members(members, tmp_path):
    from mtfer.core.backends import predict_arrays
    from mtfer.core.inference import Predictor

    splits = tiny_splits()
    weights = {"emotion": [0.7, 0.3], "gender": [1.0, 0.0], "race": [0.5, 0.5], "age": [0.2, 0.8]}
    out = combine([members["a"], members["b"]], tmp_path / "ens", weights=weights, splits=splits)

    ensemble = bundles.load_bundle(out, keras=True)  # Keras's safe mode: only its own layers
    meta = ensemble.metadata
    assert meta["architecture"] == "ensemble" and meta["precision"] == "float32"
    section = meta[ENSEMBLE_KEY]
    assert section["weights"] == weights
    assert [m["path"] for m in section["members"]] == [str(members["a"].resolve()), str(members["b"].resolve())]
    digest = hashlib.sha256((members["a"] / bundles.METADATA_FILE).read_bytes()).hexdigest()
    assert section["members"][0]["metadata_sha256"] == digest
    # Calibrated and evaluated like a trained model, its own "not sure" thresholds, nothing of a member's kept.
    assert set(meta["calibration"]["temperature"]) == set(TASK_NAMES) and meta["metrics"] and meta["abstain"]
    assert "lineage" not in meta and (out / bundles.EVALUATION_DIR).is_dir()

    faces = splits["test"].images
    a = predict_arrays(bundles.load_bundle(members["a"], keras=True).model, faces)
    b = predict_arrays(bundles.load_bundle(members["b"], keras=True).model, faces)
    mine = predict_arrays(ensemble.model, faces)
    for task, (wa, wb) in weights.items():
        np.testing.assert_allclose(mine[task], wa * a[task] + wb * b[task], atol=1e-5)
    # Served from its LiteRT file as any bundle is, with the same answers.
    assert meta["serving"]["file"] == bundles.SERVING_FILE
    served = Predictor(bundles.load_bundle(out)).predict_faces(faces)
    keras_served = Predictor(ensemble).predict_faces(faces)
    for task in TASK_NAMES:
        np.testing.assert_allclose(served[task], keras_served[task], atol=1e-3)


def test_weights_are_chosen_on_validation_faces_when_not_given(members, tmp_path):
    out = combine([members["a"], members["b"]], tmp_path / "auto", splits=tiny_splits(), evaluate=False)
    section = bundles.read_json(out / bundles.METADATA_FILE)[ENSEMBLE_KEY]
    val = tiny_splits()["val"]
    for task in TASK_NAMES:
        w = section["weights"][task]
        assert len(w) == 2 and sum(w) == pytest.approx(1) and min(w) >= 0
        scores = section["validation_accuracy"][task]
        assert scores["faces"] == int((val.labels[:, TASK_NAMES.index(task)] >= 0).sum())
        assert scores["ensemble"] >= max(scores["members"]) - 1e-9  # equal or better than either member alone


def test_members_that_cannot_be_averaged_honestly_are_refused(members, tmp_path):
    a, b = members["a"], members["b"]
    other_split = tiny_run(members["root"] / "seed", seed=7)  # another seed carves other validation faces
    with pytest.raises(EnsembleError, match="different data sets or splits"):
        combine([a, other_split], tmp_path / "x", splits=tiny_splits())
    # Another seed that keeps the first one's validation faces (split_seed) can be averaged with it.
    same_faces = tiny_run(members["root"] / "same-faces", seed=7, split_seed=1337)
    assert bundles.load_bundle(same_faces).metadata["config"]["split_seed"] == 1337
    assert combine([a, same_faces], tmp_path / "seeds", weights=[0.5, 0.5], splits=tiny_splits(), evaluate=False)
    with pytest.raises(EnsembleError, match="at least two"):
        combine([a], tmp_path / "x", splits=tiny_splits())
    with pytest.raises(EnsembleError, match="one of the members"):
        combine([a, b], b, splits=tiny_splits())
    with pytest.raises(EnsembleError, match="summing to 1"):
        combine([a, b], tmp_path / "x", weights=[0.6, 0.6], splits=tiny_splits())
    other_classes = tmp_path / "three-race"
    from helpers import three_class_race_copy

    three_class_race_copy(b, other_classes)
    with pytest.raises(EnsembleError, match="tasks and classes"):
        combine([a, other_classes], tmp_path / "x", splits=tiny_splits())
    # Face framing must match; settings only photos use (the small-face look) may differ.
    for name, change, accepted in (("look", {"small_faces": False}, True), ("margin", {"margin": 1.4}, False)):
        other = tmp_path / name
        shutil.copytree(b, other)
        meta = bundles.read_json(other / bundles.METADATA_FILE)
        meta["preprocessing"] = {**meta["preprocessing"], **change}
        bundles.atomic_write_json(other / bundles.METADATA_FILE, meta)
        if accepted:
            combine([a, other], tmp_path / f"with-{name}", weights=[0.5, 0.5], splits=tiny_splits(), evaluate=False)
        else:
            with pytest.raises(EnsembleError, match="face framing"):
                combine([a, other], tmp_path / "x", splits=tiny_splits())
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_command_line_makes_an_ensemble_of_runs_trained_on_data_sets(tmp_path, monkeypatch, capsys):
    from mtfer.cli import main
    from mtfer.train.config import TrainConfig
    from mtfer.train.trainer import train

    monkeypatch.setenv("MTFER_CACHE", str(tmp_path / "cache"))
    datasets = [
        {"format": "fer2013", "root": str(write_fer_tree(tmp_path / "fer", per_class=3))},
        {"format": "utkface", "root": str(write_utkface_tree(tmp_path / "utk", n=60))},
    ]
    runs = tmp_path / "runs"
    quick = {"datasets": datasets, "architecture": "fast", "epochs": 1, "batch_size": 16, "steps_per_epoch": 2}
    train(TrainConfig(**quick), runs / "one", install_signal_handler=False)
    train(TrainConfig(**quick, learning_rate=3e-3), runs / "two", install_signal_handler=False)

    code = main(["--runs", str(runs), "ensemble", "one", "two", "--name", "both", "--weights", "0.5,0.5"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "emotion: weights [0.5, 0.5]; validation accuracy" in out and str(runs / "both") in out
    assert "member 2 of 2 (two) on" in out and "calibrating and evaluating" in out  # each slow step announced
    meta = json.loads((runs / "both" / bundles.METADATA_FILE).read_text())
    assert meta[ENSEMBLE_KEY]["weights"]["age"] == [0.5, 0.5]
    assert {Path(k).name for k in meta["metrics"]} >= {"fer2013-val", "fer2013-test"}
    # Bad input: one clear line and exit 2, nothing written.
    assert main(["--runs", str(runs), "ensemble", "one", "two", "--name", "both"]) == 2
    assert "already holds a model" in capsys.readouterr().err
    assert main(["--runs", str(runs), "ensemble", "one", "two", "--name", "w", "--weights", "half,half"]) == 2
    assert "--weights" in capsys.readouterr().err
    assert main(["--runs", str(runs), "ensemble", "one", "nowhere", "--name", "n"]) == 2
    assert "no model 'nowhere'" in capsys.readouterr().err
    assert not (runs / "w").exists() and not (runs / "n").exists()


def test_the_split_seed_carves_the_validation_faces_whatever_the_seed():
    from mtfer.datasets.splits import SplitSettings
    from mtfer.train.config import TrainConfig

    config = TrainConfig(seed=7, split_seed=1337)
    assert config.carving_seed == 1337 and TrainConfig(seed=7).carving_seed == 7
    assert SplitSettings.of_model({"config": config.to_dict()}).seed == 1337
    assert SplitSettings.of_model({"config": TrainConfig(seed=7).to_dict()}).seed == 7
    assert SplitSettings.of_model({"config": {"seed": 5}}).seed == 5  # a bundle from before split_seed
