"""Race's "other" class: UTKFace's Indian and Others faces teach it, bundles from before it still load (their race
answers padded with a zero "other"), a network continued from one keeps what its race head knew, and the answers,
the model card and the stored figures say "other / not sure" the same way."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import three_class_race_copy, tiny_run

from mtfer.app.cards import model_card, race_groups_text
from mtfer.assess.abstain import verdict
from mtfer.core import backends, bundles
from mtfer.core.inference import Predictor
from mtfer.core.tasks import RACE, RACE_OTHER, TASKS, UTKFACE_RACE, rafdb_attribute
from mtfer.media.answers import answer, answer_labels, verdict_text
from mtfer.train.finalize import RACE_GROUPS_KEY, record_race_groups, write_thresholds
from mtfer.train.trainer import _copy_matching_weights


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("race") / "run")


def test_utkface_indian_and_others_are_race_other_and_rafdb_keeps_three_codes():
    assert RACE.classes[:3] == ("caucasian", "african_american", "asian") and RACE.classes[RACE_OTHER] == "other"
    assert [UTKFACE_RACE[c] for c in range(5)] == [0, 1, 2, RACE_OTHER, RACE_OTHER]
    assert rafdb_attribute("race", 2) == 2
    with pytest.raises(ValueError, match="0..2"):
        rafdb_attribute("race", 3)  # RAF-DB codes three groups: "other" is never read from it


def test_only_an_older_prefix_of_the_classes_is_accepted():
    metadata = {"tasks": {"race": ["caucasian", "african_american", "asian"]}, "input": {"size": 50}}
    metadata["preprocessing"] = {}
    assert bundles.validate_metadata(metadata)
    for wrong in (["asian", "caucasian", "african_american"], ["caucasian", "african_american"]):
        with pytest.raises(bundles.RunError, match="differ"):
            bundles.validate_metadata({**metadata, "tasks": {"race": wrong}})


def test_padding_gives_older_heads_todays_classes_with_zero_for_the_new_ones():
    probs = {"race": np.array([[0.2, 0.5, 0.3]], np.float32), "emotion": np.full((1, 7), 1 / 7, np.float32)}
    out = backends.padded(probs)
    assert out["race"].shape == (1, TASKS["race"].num_classes)
    np.testing.assert_array_equal(out["race"][0], np.array([0.2, 0.5, 0.3, 0.0], np.float32))
    assert out["emotion"] is probs["emotion"]  # already today's width: untouched


def test_an_older_bundle_predicts_todays_race_classes(run, tmp_path):
    old = Predictor(three_class_race_copy(run, tmp_path / "old"))
    new = Predictor(run)
    faces = np.random.default_rng(0).integers(0, 256, (3, 50, 50), dtype=np.uint8)
    probs = old.predict_faces(faces)
    assert old.classes["race"] == list(RACE.classes) == new.classes["race"]
    assert probs["race"].shape == (3, 4) and np.all(probs["race"][:, RACE_OTHER] == 0)
    np.testing.assert_allclose(probs["race"].sum(axis=1), 1.0, rtol=1e-5)
    assert new.predict_faces(faces)["race"].shape == (3, 4)


def test_continuing_an_older_model_keeps_its_three_race_outputs(run, tmp_path):
    old = bundles.load_bundle(three_class_race_copy(run, tmp_path / "old")).model
    new = bundles.load_bundle(run).model
    import keras

    target = keras.Model.from_config(new.get_config())
    before = target.get_layer("race_logits").get_weights()
    _copy_matching_weights(old, target)
    kernel, bias = target.get_layer("race_logits").get_weights()
    old_kernel, old_bias = old.get_layer("race_logits").get_weights()
    np.testing.assert_array_equal(kernel[:, :3], old_kernel)
    np.testing.assert_array_equal(bias[:3], old_bias)
    np.testing.assert_array_equal(kernel[:, 3], before[0][:, 3])  # the new class starts fresh
    np.testing.assert_array_equal(
        target.get_layer("emotion_logits").get_weights()[0], old.get_layer("emotion_logits").get_weights()[0]
    )


def test_unsure_race_names_no_other_twice():
    unsure = verdict("race", {"caucasian": 0.1, "african_american": 0.05, "asian": 0.3, "other": 0.55}, 0.6)
    assert not unsure.sure and unsure.label == "other"
    assert answer(unsure) == "Other / not sure (Asian)"
    assert verdict_text(unsure) == "**other / not sure** (Asian 30%)"
    sure = verdict("race", {"caucasian": 0.05, "african_american": 0.05, "asian": 0.1, "other": 0.8}, 0.6)
    assert answer(sure) == "Other" and verdict_text(sure) == "Other (80%)"
    labels = answer_labels(
        {"race": {"caucasian": 0.1, "african_american": 0.05, "asian": 0.3, "other": 0.55}}, {"race": 0.6}
    )
    assert labels == {"race": "other / not sure"}


def _utkface_samples() -> pd.DataFrame:
    rows = [
        (3, "other", "other", 0.9),  # Indian, answered "other"
        (4, "other", "caucasian", 0.95),  # Others, confidently a group: the failure counted
        (0, "caucasian", "caucasian", 0.9),
        (1, "african_american", "asian", 0.9),
    ]
    return pd.DataFrame(
        {
            "source": [f"UTKFace/30_0_{code}_2017{i:04d}.jpg.chip.jpg" for i, (code, *_) in enumerate(rows)],
            "split": ["test"] * len(rows),
            "race_true": [t for _, t, _, _ in rows],
            "race_pred": [p for _, _, p, _ in rows],
            "race_confidence": [c for *_, c in rows],
            "race_correct": [str(t == p) for _, t, p, _ in rows],
        }
    )


def test_race_figures_are_stored_with_the_thresholds_and_shown_on_the_model_card(run, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(run, bundle)
    folder = bundle / bundles.EVALUATION_DIR / "utkface-test"
    folder.mkdir(parents=True)
    _utkface_samples().to_csv(folder / "samples.csv", index=False)
    section = record_race_groups(bundle)
    figures = section["utkface-test"]
    assert figures["outside_other"] == 0.5 and figures["three_class_accuracy"] == 0.5
    assert figures["outside_faces"] == 2 and figures["three_group_faces"] == 2
    metadata = bundles.read_json(bundle / bundles.METADATA_FILE)
    assert metadata[RACE_GROUPS_KEY] == section
    text = race_groups_text(metadata)
    assert text is not None and text.startswith("On UTKFace test faces: 50% of Indian and Others faces")
    assert ("Race beyond three groups", text) in model_card(metadata, bundle).facts

    from mtfer.assess.abstain import Threshold

    # A stricter race threshold (chosen again) changes what "not sure" means: the figures follow it.
    strict = Threshold("race", 0.99, 0.9, 0.0, 0.9, 4)
    write_thresholds(bundle, {"race": strict})
    again = bundles.read_json(bundle / bundles.METADATA_FILE)[RACE_GROUPS_KEY]["utkface-test"]
    assert again["outside_other"] == 1.0 and again["unanswered"] == 1.0


def test_a_model_without_race_figures_has_no_such_line():
    assert race_groups_text({"race_groups": {}}) is None
    assert race_groups_text({}) is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tasks": {"emotion": None}}, "'tasks.emotion' must be a list of class names"),
        ({"tasks": {"emotion": "happy"}}, "'tasks.emotion' must be a list"),
        ({"tasks": {"emotion": [1, 2]}}, "'tasks.emotion' must be a list of class names"),
    ],
)
def test_a_hand_edited_class_list_fails_naming_its_field(run, tmp_path, change, field):
    bundle = tmp_path / "edited"
    shutil.copytree(run, bundle)
    metadata = bundles.read_json(bundle / bundles.METADATA_FILE)
    metadata.update(change)
    (bundle / bundles.METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(bundles.RunError, match=re.escape(field)):
        bundles.load_bundle(bundle)
    with pytest.raises(bundles.RunError, match=re.escape(field)):
        Predictor(bundle)  # the page and the command line get the same one line


def test_a_damaged_model_file_is_called_damaged_not_missing(run, tmp_path):
    bundle = tmp_path / "damaged"
    shutil.copytree(run, bundle)
    data = (bundle / bundles.MODEL_FILE).read_bytes()
    (bundle / bundles.MODEL_FILE).write_bytes(data[: len(data) // 3])  # a copy cut short
    with pytest.raises(bundles.RunError, match="is damaged") as info:
        bundles.load_bundle(bundle)
    assert "not found" not in str(info.value)


def test_the_evaluate_caption_says_what_the_race_answer_knows():
    from mtfer.app.wording import race_groups_caption

    now = race_groups_caption(RACE.classes, 0.5)
    before = race_groups_caption(RACE.classes[:3], 0.5)
    assert "“other” for everyone else" in now and "before “other” existed" in before
    assert "below 50% confidence" in now


def test_the_race_card_shows_race_as_the_paper_scores_it():
    from mtfer.app.cards import accuracy_cards

    metrics = {"race": {"accuracy": 0.80, "n": 100, "three_groups_accuracy": 0.92}, "age": {"accuracy": 0.7, "n": 100}}
    race, age = accuracy_cards("utkface-test", metrics, multi_task=True)
    assert race.value == "92.0%" and "“other” as wrong: 80.0%" in race.help
    assert age.value == "70.0%" and "paper scores" not in age.help
