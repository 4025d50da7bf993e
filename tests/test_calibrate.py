"""Calibration wired end to end: ECE and reliability data in every evaluation, temperatures fitted at the end of
training and by `mtfer calibrate`, stored in metadata.json, applied by the Predictor and by evaluations of a bundle;
accuracy never moves. Models are tiny runs trained here on random faces."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import random_split, write_fer_tree, write_utkface_tree

from mtfer import cli
from mtfer.assess import abstain, calibration
from mtfer.assess.evaluation import evaluate_calibrated, evaluate_predictions, load_evaluation, save_evaluation
from mtfer.core import backends, bundles
from mtfer.core.backends import predict_arrays
from mtfer.core.inference import Predictor
from mtfer.core.tasks import TASK_NAMES, TASKS
from mtfer.datasets import splits as data_splits
from mtfer.train import finalize
from mtfer.train.config import TrainConfig
from mtfer.train.trainer import train

SHARPEN = 12.0  # the synthetic model's logits are this many times too large: far too sure of itself


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    """A run trained one epoch on random faces, with the mirror-image flip on (the temperature goes on the averaged
    probabilities). Two choices keep the calibration figures the same on every CPU: float32, because "auto" trains
    in bfloat16 where the CPU has it, and bfloat16's rounding of the sharpened logits is noise no temperature
    removes; and a validation split with at least 120 labels per head (race has a quarter of the faces), because
    a temperature fitted on 30 labels left race's ECE anywhere between a third and a half lower."""
    root = tmp_path_factory.mktemp("calibrate")
    splits = {"train": random_split(64, 0), "val": random_split(480, 1), "test": random_split(240, 2)}
    config = TrainConfig(
        architecture="fast", epochs=1, batch_size=16, augment=False, tta_flip=True, precision="float32"
    )
    return train(config, root / "run", splits=splits, install_signal_handler=False), splits


@pytest.fixture(scope="module")
def synthetic(trained) -> dict:
    """Validation and test faces whose labels are drawn from the trained run's own probabilities (where the random
    split has a label): for them the run is calibrated by construction, and its SHARPEN-ed copy over-confident."""
    run, splits = trained
    rng = np.random.default_rng(7)
    out = {}
    for name in ("val", "test"):
        split = splits[name]
        probs = _raw(run, split.images)
        labels = split.labels.copy()
        for j, task in enumerate(TASK_NAMES):
            for i in np.flatnonzero(labels[:, j] >= 0):
                p = probs[task][i].astype(np.float64)
                labels[i, j] = rng.choice(len(p), p=p / p.sum())
        out[name] = data_splits.Split(split.images, labels, split.sources, split.datasets)
    return out


@pytest.fixture()
def overconfident(trained, tmp_path) -> Path:
    """A copy of the run whose heads' logits are multiplied by SHARPEN and whose calibration is removed: an
    over-confident, never calibrated bundle."""
    run, _ = trained
    bundle = bundles.load_bundle(run)
    for task in bundle.tasks:
        layer = bundle.model.get_layer(f"{task}_logits")
        layer.set_weights([w * SHARPEN for w in layer.get_weights()])
    metadata = dict(bundle.metadata)
    metadata.pop(backends.CALIBRATION_KEY)
    folder = tmp_path / "overconfident"
    bundles.save_bundle(bundle.model, metadata, folder)
    return folder


def _raw(bundle_path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    bundle = bundles.load_bundle(bundle_path)
    return predict_arrays(bundle.model, images, flip=bool(bundle.metadata["input"]["tta_flip"]))


# --- metrics.json -------------------------------------------------------------------------------------------------


def test_every_evaluation_reports_ece_and_reliability_bins(tmp_path):
    rng = np.random.default_rng(0)
    n = 200
    labels = np.full((n, 4), -1)
    labels[:, 0] = rng.integers(0, 7, n)
    probs = {"emotion": rng.dirichlet(np.ones(7) * 0.3, n), "gender": rng.dirichlet(np.ones(3), n)}
    save_evaluation(evaluate_predictions(probs, labels), tmp_path / "ev")
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    emotion = metrics["tasks"]["emotion"]
    assert emotion["ece"] == pytest.approx(calibration.expected_calibration_error(probs["emotion"], labels[:, 0]))
    diagram = emotion["reliability"]
    assert diagram["bins"] == 15 and len(diagram["edges"]) == 16 and sum(diagram["count"]) == n
    assert len(diagram["confidence"]) == len(diagram["accuracy"]) == 15
    filled = [i for i, c in enumerate(diagram["count"]) if c]
    top = probs["emotion"].max(axis=1)
    for i in filled:  # each bin's mean confidence lies inside the bin
        assert diagram["edges"][i] - 1e-4 <= diagram["confidence"][i] <= diagram["edges"][i + 1] + 1e-4
    right = probs["emotion"].argmax(1) == labels[:, 0]
    assert sum(diagram["accuracy"][i] * diagram["count"][i] for i in filled) == pytest.approx(right.sum(), abs=0.01)
    assert top.min() >= diagram["edges"][filled[0]] - 1e-9
    gender = metrics["tasks"]["gender"]  # no labelled face: no ECE, empty bins
    assert gender["ece"] is None and sum(gender["reliability"]["count"]) == 0
    assert load_evaluation(tmp_path / "ev").metrics["tasks"]["emotion"]["reliability"] == diagram


# --- training -------------------------------------------------------------------------------------------------------


def test_training_fits_a_temperature_per_head_on_validation_and_evaluates_with_it(trained):
    run, splits = trained
    metadata = bundles.read_json(run / bundles.METADATA_FILE)
    section = metadata["calibration"]
    assert set(section["temperature"]) == set(TASK_NAMES)
    assert all(t > 0 for t in section["temperature"].values())
    val = splits["val"]
    assert section["n"] == {t: int((val.labels[:, i] >= 0).sum()) for i, t in enumerate(TASK_NAMES)}
    assert section["faces"] == len(val) and section["fitted_on"] == "validation"
    # Fitted on the probabilities the Predictor computes (mirror-averaged): refitting them gives the same.
    raw = _raw(run, val.images)
    assert calibration.fit_calibration(raw, val.labels)["temperature"] == section["temperature"]
    for key, summary in metadata["metrics"].items():
        evaluation = load_evaluation(run / "evaluation" / key)
        assert evaluation.metrics["calibration"]["temperature"] == section["temperature"]
        for task, entry in evaluation.metrics["tasks"].items():
            if entry["n"]:
                assert summary[task]["ece"] == entry["ece"] and entry["ece_uncalibrated"] is not None


def test_a_calibration_failure_never_fails_a_run(trained, monkeypatch, caplog):
    run, splits = trained
    bundle = bundles.load_bundle(run)

    def broken(*args, **kwargs):
        raise FloatingPointError("simulated")

    monkeypatch.setattr(finalize, "fit_calibration", broken)
    metadata: dict = {}
    config = TrainConfig(tta_flip=True)
    with caplog.at_level(logging.ERROR, logger="mtfer.train"):
        assert finalize.calibrate_at_end(bundle.model, config, splits, metadata) == {}
    assert "calibration" not in metadata and "saved uncalibrated" in caplog.text
    assert finalize.calibrate_at_end(bundle.model, config, {"train": splits["train"]}, metadata) == {}  # no val


# --- mtfer calibrate ------------------------------------------------------------------------------------------------


def test_calibrate_fixes_an_overconfident_model_without_changing_any_answer(synthetic, overconfident):
    splits = synthetic
    val, test = splits["val"], splits["test"]
    raw_val, raw_test = _raw(overconfident, val.images), _raw(overconfident, test.images)
    before = evaluate_predictions(raw_test, test.labels, test.sources)

    result = finalize.calibrate_bundle(overconfident, splits=splits)

    section = result.calibration
    metadata = bundles.read_json(overconfident / bundles.METADATA_FILE)
    assert metadata["calibration"] == section and backends.temperatures(metadata) == section["temperature"]
    for task in TASK_NAMES:
        assert section["temperature"][task] > 1.5  # over-confident: softened
        assert section["ece_before"][task] > 0.05 and section["ece_after"][task] < section["ece_before"][task] / 2
        assert section["nll_after"][task] < section["nll_before"][task]
    # The "not sure" thresholds were chosen again, on the calibrated validation probabilities, with their targets.
    scaled = backends.calibrated(raw_val, section["temperature"])
    samples = evaluate_predictions(scaled, val.labels, val.sources, ["val"] * len(val)).samples
    expected = abstain.thresholds_from_samples(samples, TASK_NAMES)
    assert metadata["abstain"] == {t: th.to_dict() for t, th in expected.items()} == result.abstain
    # Evaluated again: same answers, same accuracy, lower ECE, and the ECE before kept.
    assert sorted(p.name for p in result.evaluations) == ["attr-test", "attr-val", "emo-test", "emo-val"]
    after_test = {k: load_evaluation(overconfident / "evaluation" / k) for k in ("emo-test", "attr-test")}
    for key, ev in after_test.items():
        part = np.asarray(test.datasets) == key.split("-")[0]
        raw_part = {t: p[part] for t, p in raw_test.items()}
        plain = evaluate_predictions(raw_part, test.labels[part])
        for task, entry in ev.metrics["tasks"].items():
            if not entry["n"]:
                continue
            assert entry["accuracy"] == plain.metrics["tasks"][task]["accuracy"]
            assert entry["confusion"] == plain.metrics["tasks"][task]["confusion"]
            assert entry["ece_uncalibrated"] == plain.metrics["tasks"][task]["ece"]
            assert entry["ece"] < entry["ece_uncalibrated"]
            assert list(ev.samples[f"{task}_pred"]) == list(before.samples[f"{task}_pred"][part])
    assert metadata["metrics"]["emo-test"]["emotion"]["accuracy"] == before.metrics["tasks"]["emotion"]["accuracy"]
    # Fitting again starts from the network's own probabilities: the same temperatures.
    again = finalize.calibrate_bundle(overconfident, splits=splits, evaluate=False)
    assert again.calibration["temperature"] == section["temperature"] and again.evaluations == []


def test_predictor_applies_the_temperatures_and_a_legacy_bundle_still_works(synthetic, overconfident, tmp_path):
    splits = synthetic
    faces = splits["test"].images[:20]
    # Keras, as _raw runs it: the same arithmetic, so the probabilities compare exactly (LiteRT serves the same
    # within float rounding: tests/test_inference.py)
    legacy = Predictor(overconfident, backend="keras")  # not calibrated yet: the network's probabilities as they are
    assert legacy.temperatures == {}
    raw = _raw(overconfident, faces)
    for task, p in legacy.predict_faces(faces).items():
        np.testing.assert_array_equal(p, raw[task])

    temperatures = finalize.calibrate_bundle(overconfident, splits=splits, evaluate=False).calibration["temperature"]
    predictor = Predictor(overconfident, backend="keras")
    assert predictor.temperatures == temperatures
    got = predictor.predict_faces(faces)
    for task in TASK_NAMES:
        np.testing.assert_allclose(got[task], backends.apply_temperature(raw[task], temperatures[task]), atol=1e-6)
        np.testing.assert_array_equal(got[task].argmax(1), raw[task].argmax(1))  # same answers
        assert got[task].max(1).mean() < raw[task].max(1).mean()  # less sure
        np.testing.assert_allclose(got[task].sum(1), 1.0, atol=1e-6)

    broken = tmp_path / "broken"
    shutil.copytree(overconfident, broken)
    metadata = bundles.read_json(broken / bundles.METADATA_FILE)
    metadata["calibration"]["temperature"]["emotion"] = -1
    bundles.atomic_write_json(broken / bundles.METADATA_FILE, metadata)
    with pytest.raises(ValueError, match="calibration.temperature.emotion must be a positive number"):
        Predictor(broken)


def test_evaluating_a_bundle_without_temperatures_reports_no_calibration():
    rng = np.random.default_rng(3)
    labels = np.full((40, 4), -1)
    labels[:, 0] = rng.integers(0, 7, 40)
    probs = {"emotion": rng.dirichlet(np.ones(7), 40)}
    plain = evaluate_calibrated(probs, labels, temperatures={})
    assert "calibration" not in plain.metrics and "ece_uncalibrated" not in plain.metrics["tasks"]["emotion"]
    assert plain.metrics == evaluate_predictions(probs, labels).metrics


def test_cli_calibrate_errors_are_one_line_and_non_zero(trained, overconfident, tmp_path, capsys):
    assert cli.main(["calibrate", "--model", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mtfer: error: no model") and "\n" not in err
    # Trained on faces given in code: nothing on disk says which were its validation faces.
    assert cli.main(["calibrate", "--model", str(overconfident)]) == 2
    err = capsys.readouterr().err.strip()
    assert "names no data set" in err and "\n" not in err
    assert "calibration" not in bundles.read_json(overconfident / bundles.METADATA_FILE)


def test_cli_calibrate_finds_the_validation_faces_of_a_run_trained_on_folders(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MTFER_CACHE", str(tmp_path / "cache"))
    fer = write_fer_tree(tmp_path / "fer", per_class=6)
    utk = write_utkface_tree(tmp_path / "utk", n=60)
    config = TrainConfig(
        datasets=[{"format": "fer2013", "root": str(fer)}, {"format": "utkface", "root": str(utk)}],
        architecture="fast",
        epochs=1,
        batch_size=16,
        augment=False,
    )
    run = train(config, tmp_path / "run", install_signal_handler=False)
    trained_with = bundles.read_json(run / bundles.METADATA_FILE)
    (run / "evaluation" / "fer2013-test" / "metrics.json").unlink()  # rewritten by calibrate
    shipped_style = load_evaluation(run / "evaluation" / "fer2013-val")  # images named relative to the data root
    shipped_style.samples["source"] = [str(Path(s).relative_to(tmp_path)) for s in shipped_style.samples["source"]]
    save_evaluation(shipped_style, run / "evaluation" / "fer2013-val")

    assert cli.main(["calibrate", "--model", str(run)]) == 0
    out = capsys.readouterr().out
    metadata = bundles.read_json(run / bundles.METADATA_FILE)
    assert f"calibrated {run} on its {trained_with['samples']['val']:,} validation faces" in out
    assert metadata["calibration"]["faces"] == trained_with["samples"]["val"]
    assert metadata["calibration"]["temperature"] == trained_with["calibration"]["temperature"]
    assert metadata["calibration"]["ece_before"] == trained_with["calibration"]["ece_before"]
    assert set(metadata["abstain"]) == set(TASKS)
    for key, summary in trained_with["metrics"].items():
        assert {t: m["accuracy"] for t, m in metadata["metrics"][key].items()} == {
            t: m["accuracy"] for t, m in summary.items()
        }
    assert "ece" in load_evaluation(run / "evaluation" / "fer2013-test").metrics["tasks"]["emotion"]
    assert "fer2013-test: emotion accuracy" in out
    val = load_evaluation(run / "evaluation" / "fer2013-val")
    assert list(val.samples["source"]) == list(shipped_style.samples["source"])  # still relative, not absolute
    assert "ece_uncalibrated" in val.metrics["tasks"]["emotion"]
    assert Path(load_evaluation(run / "evaluation" / "fer2013-test").samples["source"][0]).is_absolute()

    # A data set that changed since training: its validation faces can no longer be told apart.
    next(iter(sorted((fer / "train" / "happy").iterdir()))).unlink()
    assert cli.main(["calibrate", "--model", str(run), "--no-evaluate"]) == 2
    assert "cannot be told apart" in capsys.readouterr().err
    assert cli.main(["calibrate", "--model", str(run), "--dataset", f"rafdb={fer}"]) == 2
    assert "was not one of the data sets" in capsys.readouterr().err


def test_training_chooses_the_not_sure_thresholds_on_its_own_calibrated_validation(trained):
    run, _ = trained
    metadata = bundles.read_json(run / bundles.METADATA_FILE)
    folders = sorted((run / bundles.EVALUATION_DIR).glob("*-val"))
    assert folders, "training saves its validation evaluations"
    expected = finalize.thresholds_for_bundle(run, evaluations=folders, write=False)
    assert expected and metadata["abstain"] == {t: th.to_dict() for t, th in expected.items()}
    # what the app reads: every task with labelled validation faces has its own threshold, not the default
    assert set(abstain.min_confidences(metadata)) >= set(expected)
