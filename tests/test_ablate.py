"""training/ablate.py's tables: rows summarised over seeds, and the comparisons over seeds below them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ABLATE = Path(__file__).resolve().parents[1] / "training" / "ablate.py"


@pytest.fixture(scope="module")
def ablate():
    spec = importlib.util.spec_from_file_location("ablate_under_test", ABLATE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(row: str, seed: int, test: float, multi: bool = True) -> dict:
    attributes = dict.fromkeys(("utkface_gender", "utkface_race", "utkface_age"), 0.8 if multi else None)
    return {
        "row": row,
        "seed": seed,
        "val_accuracy": test + 0.01,
        "test_accuracy": test,
        "test_macro_f1": 0.4,
        "test_disgust_recall": 0.1,
        "test_fear_recall": 0.2,
        **attributes,
        "epochs": 3,
        "seconds": 600.0,
    }


def test_tables_compare_rows_with_their_baselines_over_seeds(ablate):
    records = [_record("recipe-single", s, t, multi=False) for s, t in ((1, 0.48), (2, 0.49), (3, 0.50))]
    records += [_record("multi-pseudo-labels", s, t) for s, t in ((1, 0.50), (2, 0.51), (3, 0.52))]
    records += [_record("multi-pseudo-soft", s, t) for s, t in ((1, 0.51), (2, 0.52), (3, 0.53))]
    records += [_record("multi-pseudo-learned", 1, 0.47)]  # one seed: a row, but no comparison yet
    text = ablate.tables(records)

    assert "| multi-pseudo-soft | four tasks, soft pseudo-labels" in text
    assert "| 3 | 53.00 ± 1.00% | 52.00 ± 1.00% | 0.400 ± 0.000 |" in text
    assert (
        "| multi-pseudo-learned | four tasks, pseudo-labels and learned task weights together | 1 | 48.00% | 47.00% |"
        in text
    )
    # Each row against emotion alone, and the pseudo-label variants against plain pseudo-labels.
    assert "multi-pseudo-labels minus recipe-single, FER2013 test emotion accuracy: +2.00 points" in text
    assert "multi-pseudo-soft minus multi-pseudo-labels, FER2013 test emotion accuracy: +1.00 points" in text
    # Difference 1 point, standard error sqrt(2 * 0.01^2 / 3), t(0.975, 4) = 2.776: half-width 2.27 points.
    assert "(95% interval -1.27 to +3.27, t with 4 degrees of freedom, 3 and 3 seeds): within the noise." in text
    # The same seeds share a validation carve and an initialisation: paired, a steady +1 point is clearly there.
    assert (
        "within the noise. Paired by seed (3 seeds, +1.00, +1.00, +1.00): +1.00 points, 95% interval +1.00 to +1.00: "
        "larger than the noise." in text
    )
    assert "multi-pseudo-soft minus recipe-single" in text and "multi-pseudo-learned minus" not in text
    assert ablate.tables([]) == "No ablation runs yet.\n"


def test_reproduce_rows_are_the_recipe_with_their_own_settings(tmp_path):
    import argparse

    spec = importlib.util.spec_from_file_location("reproduce_under_test", ABLATE.parent / "reproduce.py")
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    args = argparse.Namespace(epochs=None, seed=7)
    pseudo = reproduce.row_config("recipe-multi-pseudo", tmp_path, args)
    shipped = reproduce.row_config("recipe-multi", tmp_path, args)
    assert pseudo.pseudo_labels == ["auto"] and pseudo.loss_weights["gender"] == 1.0
    assert shipped.pseudo_labels is None and shipped.loss_weights["gender"] == 0.1
    # Otherwise the same run: the recipe, 30 epochs, both data sets, the seed given.
    different = {k for k, v in pseudo.to_dict().items() if shipped.to_dict()[k] != v}
    assert different == {"pseudo_labels", "pseudo_targets", "loss_weights", "name", "run_id"}
    assert pseudo.pseudo_targets == "soft"
    assert (pseudo.epochs, pseudo.seed, pseudo.architecture) == (30, 7, "fast")
    assert [d["format"] for d in pseudo.datasets] == ["fer2013", "utkface"]
    # The second stage continues the first stage's run, or a model named with --start (a copy of what it made).
    args.start = None
    other = reproduce.row_config("recipe-multi-pseudo-other", tmp_path, args)
    assert other.init_from == "reproduce-recipe-multi-pseudo" and (other.epochs, other.learning_rate) == (12, 5e-4)
    assert other.pseudo_targets == "soft" and other.architecture == "fast"
    args.start = tmp_path / "previous"
    assert reproduce.row_config("recipe-multi-pseudo-other", tmp_path, args).init_from == str(args.start.resolve())
    # The distilled row: the continuation's settings, the teacher's probabilities on true labels too.
    student = reproduce.row_config("recipe-distill", tmp_path, args)
    assert (student.distill, student.pseudo_targets, student.architecture) == (0.5, "soft", "fast")
    assert student.init_from == str(args.start.resolve()) and student.learning_rate == 5e-4


def test_a_row_taught_by_an_ensemble_waits_for_its_members_and_makes_the_teacher_once(tmp_path, monkeypatch):
    import argparse

    from helpers import tiny_run

    from mtfer.core import bundles
    from mtfer.store import runs

    spec = importlib.util.spec_from_file_location("reproduce_teacher", ABLATE.parent / "reproduce.py")
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    runs_dir = tmp_path / "runs"
    args = argparse.Namespace(runs=runs_dir, teacher=tiny_run(tmp_path / "shipped"))
    with pytest.raises(SystemExit, match="wide-multi-pseudo row: train that row first"):
        reproduce.ensemble_teacher("recipe-distill", args)
    wide = tiny_run(runs_dir / "reproduce-wide-multi-pseudo", learning_rate=3e-3)
    assert runs.read_progress(wide).get("state") == "finished"
    made = []
    monkeypatch.setattr("mtfer.train.ensemble.combine", lambda members, out: made.append(members) or Path(out))
    folder = reproduce.ensemble_teacher("recipe-distill", args)
    assert folder == runs_dir / "reproduce-ensemble-recipe-distill" and made == [[args.teacher, wide]]
    folder.mkdir()
    (folder / bundles.METADATA_FILE).write_text("{}")
    assert reproduce.ensemble_teacher("recipe-distill", args) == folder and len(made) == 1  # made once


def _with_val(folder: Path, accuracy: float) -> Path:
    """A run or bundle whose metadata says: holdout, four tasks, this FER2013 validation emotion accuracy."""
    from mtfer.core import bundles

    meta = bundles.read_json(folder / bundles.METADATA_FILE)
    meta["protocol"] = "holdout"
    meta["metrics"]["fer2013-val"] = {"emotion": {"accuracy": accuracy, "n": 10}}
    bundles.atomic_write_json(folder / bundles.METADATA_FILE, meta)
    return folder


def test_ship_replaces_the_shipped_model_only_with_a_better_one_on_validation(tmp_path, monkeypatch, capsys):
    from helpers import tiny_run

    from mtfer.core import bundles

    spec = importlib.util.spec_from_file_location("reproduce_ship", ABLATE.parent / "reproduce.py")
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    shipped = _with_val(tiny_run(tmp_path / "models" / "default"), 0.60)
    monkeypatch.setattr(bundles, "DEFAULT_BUNDLE", shipped)
    runs_dir = tmp_path / "runs"
    worse = _with_val(tiny_run(runs_dir / "20990101-000000-worse"), 0.55)
    before = (shipped / bundles.METADATA_FILE).read_text()

    # A fresh checkout has only its own runs: a worse one must not replace the shipped model.
    assert reproduce.ship(runs_dir, tmp_path) is None
    assert "kept the shipped model" in capsys.readouterr().out
    assert (shipped / bundles.METADATA_FILE).read_text() == before

    # A model from before race had "other" is never shipped again, however good its emotion.
    older = _with_val(tiny_run(runs_dir / "20990101-000000-older"), 0.99)
    meta = bundles.read_json(older / bundles.METADATA_FILE)
    meta["tasks"]["race"] = meta["tasks"]["race"][:3]
    bundles.atomic_write_json(older / bundles.METADATA_FILE, meta)
    # Nor is an ensemble (a teacher: its members' time per face together, over the size budget).
    ensemble = _with_val(tiny_run(runs_dir / "20990101-000000-ensemble"), 0.98)
    meta = bundles.read_json(ensemble / bundles.METADATA_FILE)
    bundles.atomic_write_json(ensemble / bundles.METADATA_FILE, {**meta, "architecture": "ensemble"})
    _with_val(worse, 0.65)
    assert reproduce.ship(runs_dir, tmp_path) == worse
    meta = bundles.read_json(shipped / bundles.METADATA_FILE)
    assert meta["metrics"]["fer2013-val"]["emotion"]["accuracy"] == 0.65 and meta["title"].startswith("mtfer default")


def test_the_shipped_run_is_one_row_of_the_results_table_under_its_name(tmp_path, monkeypatch):
    from helpers import tiny_run

    from mtfer.core import bundles

    spec = importlib.util.spec_from_file_location("reproduce_table", ABLATE.parent / "reproduce.py")
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    shipped = _with_val(tiny_run(tmp_path / "models" / "default"), 0.60)
    meta = bundles.read_json(shipped / bundles.METADATA_FILE)
    bundles.atomic_write_json(shipped / bundles.METADATA_FILE, {**meta, "created": "2026-11-30T10:41:46+00:00"})
    monkeypatch.setattr(bundles, "DEFAULT_BUNDLE", shipped)
    runs_dir = tmp_path / "runs"
    _with_val(tiny_run(runs_dir / "reproduce-recipe-multi-pseudo"), 0.65)
    _with_val(tiny_run(runs_dir / "reproduce-recipe-multi"), 0.50)

    def rows() -> list[str]:
        text, _ = reproduce.table(runs_dir)
        return [line for line in text.splitlines() if "fast, recipe" in line and "reduced budget" not in line]

    before = rows()
    assert len(before) == 3 and "**the shipped model**" in before[0]
    assert reproduce.ship(runs_dir, tmp_path) == runs_dir / "reproduce-recipe-multi-pseudo"
    after = rows()
    assert len(after) == 2
    assert after[0].startswith("| multi-task fast, recipe, soft pseudo-labels: **the shipped model** |")
    assert after[1].startswith("| multi-task fast, recipe, true labels only |")


def test_the_docs_results_table_shows_the_shipped_model_as_its_card_does(tmp_path):
    """docs/results.md, Home and Evaluate agree: its shipped row is what reproduce.py makes of models/default now
    (accuracies, macro-F1, epochs and wall time over every stage), and the card's training time is the same time."""
    from mtfer.app import cards
    from mtfer.core import bundles

    if not (bundles.DEFAULT_BUNDLE / bundles.METADATA_FILE).exists():
        pytest.skip("no shipped model in models/default")
    spec = importlib.util.spec_from_file_location("reproduce_readme", ABLATE.parent / "reproduce.py")
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    text, records = reproduce.table(tmp_path / "no-runs")
    (made,) = [line for line in text.splitlines() if "**the shipped model**" in line]
    results = (ABLATE.parent.parent / "docs" / "results.md").read_text()
    (shown,) = [line for line in results.splitlines() if "**the shipped model**" in line and line.startswith("|")]
    cells = lambda line: [c.strip() for c in line.strip("|").split("|")]  # noqa: E731
    assert cells(shown)[1:] == cells(made)[1:], "regenerate: python training/reproduce.py --table-only"
    minutes = round(records[0]["seconds"] / 60)
    facts = dict(
        cards.model_card(
            bundles.read_json(bundles.DEFAULT_BUNDLE / bundles.METADATA_FILE), str(bundles.DEFAULT_BUNDLE)
        ).facts
    )
    hours, rest = divmod(minutes, 60)
    assert facts["Training time"].startswith(f"{hours} h {rest:02d} min" if hours else f"{minutes} min")
    assert f"{records[0]['epochs']} epochs" in facts["Training time"]  # one stage or several


def test_both_scripts_rewrite_only_their_own_table_in_docs_results(ablate, tmp_path, monkeypatch):
    """reproduce.py and ablate.py write between their markers in docs/results.md; the rest of the page stays."""
    spec = importlib.util.spec_from_file_location("reproduce_write", ABLATE.parent / "reproduce.py")
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    (tmp_path / "training").mkdir()
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "results.md"
    page.write_text(
        "# Results\n\n<!-- results:start -->\nold\n<!-- results:end -->\n\nbetween\n\n"
        "<!-- ablation:start -->\nold\n<!-- ablation:end -->\n\nafter\n"
    )
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:start -->\nuntouched\n<!-- results:end -->\n")
    monkeypatch.setattr(ablate, "HERE", tmp_path / "training")
    monkeypatch.setattr(reproduce, "HERE", tmp_path / "training")
    ablation = ablate.write(tmp_path / "no-runs")
    results = reproduce.write_table(tmp_path / "no-runs")
    assert ablation == "No ablation runs yet.\n" and results.startswith("| run | protocol |")
    assert page.read_text() == (
        f"# Results\n\n<!-- results:start -->\n{results}<!-- results:end -->\n\nbetween\n\n"
        f"<!-- ablation:start -->\n{ablation}<!-- ablation:end -->\n\nafter\n"
    )
    assert (tmp_path / "training" / "results.md").read_text() == results
    assert (tmp_path / "training" / "ablation.md").read_text() == ablation
    assert readme.read_text() == "<!-- results:start -->\nuntouched\n<!-- results:end -->\n"
