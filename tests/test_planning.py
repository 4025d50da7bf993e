"""Planning a run before it starts (mtfer.train.planning): the Train page's presets, rates measured from earlier runs, the
cache's preparation rate and entries, and the time estimate. Every runs and cache folder here is made in tmp."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pandas as pd
import pytest
from helpers import write_fer_tree

from mtfer.app import job_view, wording
from mtfer.core import bundles
from mtfer.core.preprocess import PreprocessConfig
from mtfer.datasets.cache import find_entry, preparation_rate, prepare
from mtfer.store import runs
from mtfer.store.settings import FoundDataset
from mtfer.train import config as train_config
from mtfer.train import planning
from mtfer.train.config import PRESETS, TrainConfig

PRECISION = planning.resolved_precision("auto")


def fake_run(
    runs_dir: Path,
    name: str,
    *,
    architecture: str = "fast",
    seconds: list[float],
    progress: dict | None = None,
    metadata: dict | None = None,
    batch_size: int = 64,
) -> Path:
    """A run folder as the trainer leaves it, with the epoch seconds given."""
    run = runs_dir / name
    bundles.atomic_write_json(run / bundles.CONFIG_FILE, {"architecture": architecture, "batch_size": batch_size})
    runs.write_progress(run, **{"state": "finished", **(progress or {})})
    pd.DataFrame({"epoch": range(1, len(seconds) + 1), "seconds": seconds}).to_csv(run / bundles.HISTORY_FILE)
    if metadata is not None:
        bundles.atomic_write_json(run / bundles.METADATA_FILE, metadata)
    return run


def test_page_presets_fill_every_setting():
    assert list(train_config.PRESETS) == ["demo", "recipe", "paper"] and train_config.DEFAULT_PRESET == "paper"
    demo = train_config.PRESETS["demo"].config()
    assert train_config.PRESETS["demo"].label == "Quick demo (minutes)"
    assert (demo.architecture, demo.epochs, demo.limit, demo.lr_schedule) == ("fast", 3, 4000, "cosine")
    assert demo == TrainConfig.from_preset("demo")
    recipe = train_config.PRESETS["recipe"].config()
    assert recipe == TrainConfig.from_preset("recipe") and recipe.epochs == 30  # as the shipped model was trained
    paper = train_config.PRESETS["paper"].config()
    assert paper == TrainConfig.from_preset("paper") and paper.epochs == 100 and paper.preprocessing == "haar"
    demo_settings, recipe_settings = PRESETS["demo"].settings, PRESETS["recipe"].settings
    # The demo continues the shipped model (the recipe's network) gently: a tenth of the learning rate, short warmup.
    assert {k for k in demo_settings if demo_settings[k] != recipe_settings.get(k)} == {
        "epochs",
        "limit",
        "init_from",
        "learning_rate",
        "warmup_epochs",
    }
    assert demo.init_from == "default" and demo.architecture == recipe.architecture


def test_rates_are_measured_from_earlier_runs_newest_first(tmp_path):
    # First epoch (tracing) left out: 6,000 faces / median(100, 120, 80) s = 60 faces/s.
    fake_run(
        tmp_path, "20260101-a", seconds=[500, 100, 120, 80], progress={"epoch_faces": 6000, "precision": "float32"}
    )
    assert planning.measured_rate(tmp_path / "20260101-a") == ("fast", "float32", 60.0)
    rate = planning.training_rate("fast", "float32", tmp_path)
    assert (rate.faces_per_s, rate.source, rate.run) == (60.0, "measured", "20260101-a")
    # A newer run of the same network and precision wins; an older run's faces per epoch are its steps x batch
    # size, capped by its training faces, and its precision is its metadata's.
    fake_run(
        tmp_path,
        "20260102-b",
        seconds=[40],
        progress={"steps": 100},
        metadata={"samples": {"train": 4000}, "precision": "float32"},
    )
    assert planning.training_rate("fast", "float32", tmp_path).faces_per_s == pytest.approx(100.0)
    # Runs that do not tell: too few faces (fixed costs dominate), no history, another network.
    fake_run(tmp_path, "20260103-tiny", seconds=[2, 2], progress={"epoch_faces": 64, "precision": "float32"})
    assert planning.measured_rate(tmp_path / "20260103-tiny") is None
    (tmp_path / "20260104-empty").mkdir()
    bundles.atomic_write_json(tmp_path / "20260104-empty" / bundles.CONFIG_FILE, {"architecture": "fast"})
    assert planning.measured_rate(tmp_path / "20260104-empty") is None
    # A run stopped in its first epoch has no epoch seconds: the throughput of its steps stands in (with
    # validation's share), once enough faces went through, so that the estimate after Stop is this machine's.
    stopped = {"state": "stopped", "step": 40, "faces_per_s": 50.0, "precision": "float32"}
    fake_run(tmp_path, "20260105-stopped", seconds=[], progress=stopped)
    assert planning.measured_rate(tmp_path / "20260105-stopped") == (
        "fast",
        "float32",
        50.0 * planning.VALIDATION_SHARE,
    )
    assert planning.training_rate("fast", "float32", tmp_path).run == "20260105-stopped"
    fake_run(tmp_path, "20260106-early", seconds=[], progress={**stopped, "step": 3})  # 192 faces: too few
    assert planning.measured_rate(tmp_path / "20260106-early") is None
    paper = planning.training_rate("paper", "float32", tmp_path)
    assert paper.source == "benchmark" and paper.faces_per_s == pytest.approx(73.0 * planning.VALIDATION_SHARE)


def test_cache_entries_and_preparation_rate_are_found_without_reading_the_data(tmp_path):
    fer = write_fer_tree(tmp_path / "fer", per_class=2)
    pre = PreprocessConfig.named("haar")
    prepared = prepare("fer2013", fer, config=pre, cache_dir=tmp_path / "cache")
    assert find_entry("fer2013", fer, pre, cache_dir=tmp_path / "cache") == Path(prepared.path)
    assert find_entry("fer2013", fer, pre, limit=10, cache_dir=tmp_path / "cache") is None
    assert find_entry("fer2013", fer, PreprocessConfig.named("blazeface"), cache_dir=tmp_path / "cache") is None
    assert find_entry("utkface", fer, pre, cache_dir=tmp_path / "cache") is None
    assert preparation_rate("haar", tmp_path / "cache") is None  # 28 faces: too few to time
    for i, (faces, seconds) in enumerate(((1000, 10.0), (3000, 10.0), (2000, 10.0))):
        entry = tmp_path / "timed" / f"fer2013-{i}"
        entry.mkdir(parents=True)
        meta = {"config": {"detector": "haar"}, "report": {"prepared": faces, "seconds": seconds}}
        (entry / "meta.json").write_text(json.dumps(meta))
    assert preparation_rate("haar", tmp_path / "timed") == 200.0
    assert preparation_rate("blazeface", tmp_path / "timed") is None


def _found(fmt: str, root: Path, train: int, test: int) -> FoundDataset:
    return FoundDataset(fmt, str(root), fmt, train + test, {"train": train, "test": test}, {"emotion": train + test})


def test_estimate_adds_training_and_first_preparation(tmp_path):
    fer = write_fer_tree(tmp_path / "fer", per_class=2)
    data = [_found("fer2013", fer, 9000, 1000), _found("utkface", tmp_path / "utk", 18000, 2000)]
    sizes = planning.split_sizes(data, TrainConfig())
    assert sizes == pytest.approx({"train": 24300, "val": 2700, "test": 3000})
    limited = planning.split_sizes(data, TrainConfig(limit=5000, protocol="paper"))
    assert limited == pytest.approx({"train": 9000, "val": 1000, "test": 0})

    rate = planning.Rate(100.0, "measured", "r1")
    config = TrainConfig(architecture="fast", epochs=20, preprocessing="haar")
    prepare("fer2013", fer, config=PreprocessConfig.named("haar"), cache_dir=tmp_path / "cache")
    e = planning.estimate(config, data, tmp_path / "runs", tmp_path / "cache", rate=rate, slowdown=1.0)
    assert e.epoch_faces == 24300 and e.to_prepare == ["utkface"] and e.prepare_faces == 20000  # fer2013 cached
    assert e.train_seconds == pytest.approx(4860 + planning.STARTUP_S + 5700 / planning.EVALUATION_RATE)
    assert e.prepare_seconds == pytest.approx(20000 / planning.DEFAULT_PREPARE_RATE)
    assert e.may_stop_early and e.long  # 20 epochs, early stopping after 11 without progress
    text = job_view.estimate_text(e)
    assert text.startswith(
        "**1 h 10 min to 1 h 50 min at most.** Training: 20 epochs × 24,300 faces at about 100 faces/s"
    )
    assert "measured on this machine in run r1" in text and "utkface is prepared (20,000 faces" in text
    assert "busy" not in text
    # a machine busy with other work (the load average over the cores): everything takes longer, and it says so
    busy = planning.estimate(config, data, tmp_path / "runs", tmp_path / "cache", rate=rate, slowdown=2.0)
    assert busy.seconds == pytest.approx(2 * e.seconds) and busy.span == pytest.approx(
        (1.7 * e.seconds, 2.6 * e.seconds)
    )
    assert "busy with other work now, which makes it about 2.0× slower" in job_view.estimate_text(busy)

    demo = train_config.PRESETS["demo"].config()
    quick = planning.estimate(demo, data, tmp_path / "runs", tmp_path / "cache", rate=rate, slowdown=1.0)
    assert not quick.long and not quick.may_stop_early and quick.seconds < 600
    assert train_config.PRESETS["paper"].config().epochs * 24300 / 100 > planning.LONG_JOB_S
    capped = planning.estimate(
        TrainConfig(steps_per_epoch=10, batch_size=8), data, tmp_path / "runs", tmp_path / "cache", rate=rate
    )
    assert planning.estimate(config, data, tmp_path / "runs", tmp_path / "cache", rate=rate).slowdown >= 1.0
    assert capped.epoch_faces == 80


def test_the_machines_load_slows_the_estimate():
    assert planning.machine_slowdown(load=0.0, cores=2) == 1.0
    assert planning.machine_slowdown(load=2.0, cores=2) == 2.0  # another job on every core: half the speed
    assert planning.machine_slowdown(load=50.0, cores=2) == planning.MAX_SLOWDOWN
    assert planning.machine_slowdown() >= 1.0


def test_estimates_are_ranges_in_words():
    assert wording.about_range(20, 50) == "under a minute"
    assert wording.about_range(3 * 60, 5 * 60) == "3-5 min" and wording.about_range(30, 150) == "1-2 min"
    assert (
        wording.about_range(12 * 60, 12 * 60) == "about 12 min" and wording.about_range(40 * 60, 52 * 60) == "40-50 min"
    )
    assert wording.about_range(70 * 60, 110 * 60) == "1 h 10 min to 1 h 50 min"
    assert job_view.eta_text(200) == " · 3-4 min left"


def test_durations_are_rounded_as_estimates():
    rough = functools.partial(wording.format_duration, style="rough")
    assert rough(30) == "under a minute" and wording.about(30) == "under a minute"
    assert rough(12.4 * 60) == "12 min" and wording.about(90) == "about 2 min"
    assert rough(3600) == "1 h" and rough(100 * 60) == "1 h 40 min"
    assert rough(3 * 3600 + 23 * 60) == "3 h 25 min"


def test_a_rate_measured_while_other_work_ran_counts_as_the_quiet_machines(tmp_path):
    # Same epochs, but the second run shared the machine with other work half the time: its epochs ran 1.5x slower
    # and the rate it stands for is the quiet machine's, the same as the first run's.
    quiet = fake_run(tmp_path, "20260101-a", seconds=[500, 100, 100, 100], progress={"epoch_faces": 6000})
    shared = fake_run(tmp_path, "20260102-b", seconds=[500, 150, 150, 150], progress={"epoch_faces": 6000})
    history = pd.read_csv(shared / bundles.HISTORY_FILE).assign(other_work=0.5)
    history.to_csv(shared / bundles.HISTORY_FILE, index=False)
    assert planning.measured_rate(quiet)[2] == pytest.approx(60.0)
    assert planning.measured_rate(shared)[2] == pytest.approx(60.0)
    # What other processes use is told apart from this process's own CPU time.
    start = planning.cpu_sample()
    end = (start[0] + 3.0, start[1] + 1.0)  # 3 CPU seconds in all over 2 s, 1 of them ours
    cores = os.cpu_count() or 1
    assert planning.other_work(start, end, 2.0) == pytest.approx(min(1.0, 2.0 / (2.0 * cores)))
    assert planning.other_work(None, end, 2.0) == 0.0 and planning.other_work(start, start, 0.0) == 0.0
