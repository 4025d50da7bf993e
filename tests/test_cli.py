"""The `mtfer` command's user-facing behaviour: where `evaluate` writes, what it prints, the help's account of
where files go, and a terminal free of TensorFlow's start-up noise."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtfer import cli
from mtfer.app import wording
from mtfer.cli import assess_cmds
from mtfer.core import bundles, quiet
from mtfer.datasets.cache import load_prepared
from mtfer.store import settings

REPO = Path(__file__).resolve().parents[1]
NOISE = ("cuInit", "cuda", "CUDA", "absl::InitializeLog", "oneDNN", "cpu_feature_guard")


def mtfer(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mtfer.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def noise_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(word in line for word in NOISE)]


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def face_photo(seed: int, side: int = 96) -> np.ndarray:
    """A face-like grayscale picture (oval, eyes, mouth) on a textured background."""
    rng = np.random.default_rng(seed)
    image = rng.integers(40, 90, (side, side), dtype=np.uint8)
    c = side // 2
    cv2.ellipse(image, (c, c), (side * 3 // 10, side * 4 // 10), 0, 0, 360, 170, -1)
    for dx in (-side // 7, side // 7):
        cv2.circle(image, (c + dx, c - side // 10), max(2, side // 20), 30, -1)
    cv2.ellipse(image, (c, c + side // 6), (side // 8, side // 20), 0, 0, 180, 60, -1)
    return image


@pytest.fixture
def fer_tree(tmp_path: Path) -> Path:
    """FER2013 image folders: 3 train and 2 test faces in each of two emotions."""
    root = tmp_path / "fer2013"
    for split, n in (("train", 3), ("test", 2)):
        for k, emotion in enumerate(("happy", "sad")):
            folder = root / split / emotion
            folder.mkdir(parents=True)
            for i in range(n):
                cv2.imwrite(str(folder / f"{split}_{i}.jpg"), face_photo(100 * k + 10 * i + len(split)))
    return root


# --- help ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "names"),
    [
        ("prepare", ("MTFER_CACHE", "MTFER_DATA_ROOTS")),
        ("train", ("MTFER_CACHE", "MTFER_RUNS", "MTFER_DATA_ROOTS", "TF_CPP_MIN_LOG_LEVEL")),
        ("evaluate", ("MTFER_CACHE", "MTFER_RUNS", "MTFER_DATA_ROOTS", "evaluations/", "TF_CPP_MIN_LOG_LEVEL")),
    ],
)
def test_help_says_where_files_go_and_which_variables_move_them(command, names, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MTFER_CACHE", str(tmp_path / "my-cache"))
    monkeypatch.setenv("MTFER_RUNS", str(tmp_path / "my-runs"))
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in names:
        assert name in text, f"`mtfer {command} --help` does not mention {name}"
    assert str(tmp_path / "my-cache") in text  # the folder in use now, from the variable
    if command != "prepare":
        assert str(tmp_path / "my-runs") in text
    assert settings.ENV_DATA_ROOTS in text


def test_prepare_split_option_reaches_prepare(fer_tree, tmp_path):
    proc = mtfer("prepare", "--format", "fer2013", "--data", str(fer_tree), "--split", "test", "--workers", "1",
                 env={"MTFER_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "fer2013: 4 faces prepared" in proc.stdout
    assert "[" in proc.stderr and "4/4" in proc.stderr  # the progress bar counted the test faces only
    (entry,) = (tmp_path / "cache").iterdir()
    assert set(load_prepared(entry).splits.tolist()) == {"test"}


# --- evaluate ------------------------------------------------------------------------------------------------


def test_format_metrics_prints_accuracy_macro_f1_and_recall_per_class():
    metrics = {
        "tasks": {
            "emotion": {
                "n": 4,
                "accuracy": 0.75,
                "macro_f1": 0.5,
                "classes": ["happy", "sad", "fear"],
                "per_class": {
                    "happy": {"recall": 1.0, "support": 3},
                    "sad": {"recall": 0.0, "support": 1},
                    "fear": {"recall": 0.0, "support": 0},
                },
            },
            "gender": {"n": 0, "accuracy": None, "macro_f1": None, "classes": ["male", "female"], "per_class": {}},
        }
    }
    lines = assess_cmds.format_metrics(metrics).splitlines()
    assert lines[0] == "emotion: accuracy 0.7500  macro-F1 0.5000  (4 faces)"
    assert lines[1].split() == ["class", "recall", "support"]
    assert lines[2].split() == ["happy", "1.000", "3"]
    assert lines[3].split() == ["sad", "0.000", "1"]
    assert lines[4].split() == ["fear", "n/a", "0"]  # no face of that class: no recall, not 0
    assert lines[5] == "gender: no labelled faces"


def test_evaluate_default_model_writes_under_runs_not_into_the_bundle(fer_tree, tmp_path):
    shipped = bundles.DEFAULT_BUNDLE / bundles.EVALUATION_DIR
    before = tree_digest(shipped)
    runs_dir, cache = tmp_path / "runs", tmp_path / "cache"
    proc = mtfer("evaluate", "--model", "default", "--format", "fer2013", "--data", str(fer_tree), "--split", "test",
                 env={"MTFER_RUNS": str(runs_dir), "MTFER_CACHE": str(cache)}, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert tree_digest(shipped) == before  # the shipped evaluations are untouched

    (out,) = (runs_dir / bundles.EVALUATIONS_DIR).iterdir()
    assert out.name.startswith("default-") and out.name.endswith("-fer2013-test")
    assert f"evaluation saved in {out}" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 4 and metrics["model"] == str(bundles.DEFAULT_BUNDLE.resolve())
    # Per task: accuracy, macro-F1 and a recall table; tasks without labels say so.
    assert "emotion: accuracy" in proc.stdout and "macro-F1" in proc.stdout
    assert any(line.split()[:1] == ["happy"] for line in proc.stdout.splitlines())
    assert "gender: no labelled faces" in proc.stdout
    # Only the test split was framed, with a progress bar.
    (entry,) = cache.iterdir()
    assert set(load_prepared(entry).splits.tolist()) == {"test"}
    assert "framing the test faces" in proc.stderr and "4/4" in proc.stderr
    assert "running the network" in proc.stderr  # the network's pass has its own bar: no silent phase
    assert not noise_lines(proc.stderr), proc.stderr

    # The Evaluate page lists it beside the shipped evaluations and finds its folder.
    names = settings.list_evaluations(bundles.DEFAULT_BUNDLE, runs_dir)
    assert out.name in names and "fer2013-test" in names
    assert settings.evaluation_dir(bundles.DEFAULT_BUNDLE, out.name, runs_dir) == out
    assert settings.evaluation_dir(bundles.DEFAULT_BUNDLE, "fer2013-test", runs_dir) == shipped / "fer2013-test"
    assert wording.evaluation_dataset(out.name) == "fer2013"  # the paper's FER2013 figure still applies


# --- TensorFlow's start-up noise -----------------------------------------------------------------------------


def test_predict_stderr_has_no_tensorflow_start_up_noise(tmp_path):
    photo = tmp_path / "photo.png"
    canvas = np.full((240, 240), 128, np.uint8)
    canvas[40:200, 40:200] = cv2.resize(face_photo(3), (160, 160))
    cv2.imwrite(str(photo), canvas)
    env = {"MTFER_RUNS": str(tmp_path / "runs")}
    env_without_level = {k: v for k, v in os.environ.items() if k != quiet.ENV_LOG_LEVEL}
    proc = subprocess.run(
        [sys.executable, "-m", "mtfer.cli", "predict", str(photo), "--model", "default", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env_without_level, **env},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    faces = json.loads(proc.stdout)["faces"]
    assert faces, "the photo's face was not found"
    for face in faces:  # the answer the page shows, beside the raw top class
        for task, answer in face["answer"].items():
            assert answer in (face["top"][task], "not sure", "other / not sure")
    assert not noise_lines(proc.stderr), proc.stderr


FAKE_TENSORFLOW = """
import os, sys, warnings

# What TensorFlow's native libraries print at import and when the CUDA platform is probed, plus a real error.
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
os.write(2, b"I0000 00:00:1796028006.801225    5032 port.cc:153] oneDNN custom operations are on.\\n")
os.write(2, b"I0000 00:00:1796028012.354845    5120 cpu_feature_guard.cc:227] This TensorFlow binary is optimized\\n")
os.write(2, b"To enable the following instructions: AVX2 FMA, rebuild TensorFlow.\\n")
os.write(2, b"E0000 00:00:1796028010.366445    5032 real_problem.cc:12] disk quota exceeded\\n")
warnings.warn("a Python warning during the import")


class config:
    @staticmethod
    def list_physical_devices():
        os.write(2, b"E0000 00:00:1796028010.366445    5032 cuda_platform.cc:52] failed call to cuInit: UNKNOWN\\n")
        print("python stderr during the probe", file=sys.stderr)
        return []
"""


@pytest.mark.parametrize("level", [None, "0"])
def test_import_tensorflow_keeps_errors_and_python_warnings(tmp_path, level):
    (tmp_path / "tensorflow.py").write_text(FAKE_TENSORFLOW)
    env = {k: v for k, v in os.environ.items() if k != quiet.ENV_LOG_LEVEL}
    if level is not None:
        env[quiet.ENV_LOG_LEVEL] = level
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
    script = textwrap.dedent(
        """
        import os, sys
        from mtfer.core import quiet
        quiet.import_tensorflow()
        print("after the import", file=sys.stderr)
        os.write(2, b"I0000 00:00:1.0 1 later.cc:1] native output after the import is left alone\\n")
        print(os.environ["TF_CPP_MIN_LOG_LEVEL"])
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert "disk quota exceeded" in err  # a real native error is kept
    assert "a Python warning during the import" in err
    assert "after the import" in err and "left alone" in err
    if level is None:
        assert proc.stdout.strip() == "2"
        assert "python stderr during the probe" in err
        assert not noise_lines(err), err
        assert "To enable the following instructions" not in err  # the rest of a dropped record
    else:  # the user asked for TensorFlow's logs: nothing is filtered
        assert proc.stdout.strip() == "0"
        assert "absl::InitializeLog" in err and "oneDNN" in err and "To enable the following" in err


def test_loading_a_model_outside_the_command_line_prints_no_start_up_noise(tmp_path):
    """The app's server loads models through the library, not the CLI: its terminal stays as clean."""
    code = "from mtfer.core.inference import Predictor; Predictor(); print('loaded')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0 and "loaded" in proc.stdout, proc.stderr[-2000:]
    assert not noise_lines(proc.stderr), proc.stderr


def test_predict_streams_photos_and_a_photo_broken_past_its_header_is_one_line(tmp_path, capsys):
    """Photos are checked first (headers only) and decoded one at a time as the network answers; a photo whose
    pixels are broken after a sound header is reported when its turn comes, and the others are answered."""
    from mtfer import cli

    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), face_photo(3))
    broken = tmp_path / "broken.jpg"
    data = good.read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # the header (and its size) intact, the pixels cut short
    rc = cli.main(["predict", str(good), str(broken), str(good), "--model", "default"])
    out, err = capsys.readouterr()
    assert rc == 1 and out.count("good.jpg: ") == 2 and "broken.jpg" not in out
    assert err.count("mtfer: error: ") == 1 and "broken.jpg: truncated or corrupt JPEG" in err


def test_runs_marks_the_active_model_and_activate_default_goes_back(tmp_path, capsys):
    from helpers import tiny_run

    runs_dir = tmp_path / "runs"
    run = tiny_run(runs_dir / "20261207-120000-tiny")
    assert cli.main(["--runs", str(runs_dir), "runs"]) == 0
    listing = capsys.readouterr().out
    assert f"  {run.name}" in listing and "active model: the shipped model" in listing
    assert cli.main(["--runs", str(runs_dir), "runs", "--activate", run.name]) == 0
    capsys.readouterr()
    assert cli.main(["--runs", str(runs_dir), "runs"]) == 0
    listing = capsys.readouterr().out
    assert f"* {run.name}" in listing and f"active model: {run.name}" in listing
    assert cli.main(["--runs", str(runs_dir), "runs", "--activate", "default"]) == 0
    assert "(the shipped model)" in capsys.readouterr().out
    assert settings.active_model(runs_dir).shipped and (run / bundles.METADATA_FILE).is_file()
    with pytest.raises(SystemExit):
        cli.main(["runs", "--help"])
    assert "'default' to go back to the shipped model" in " ".join(capsys.readouterr().out.split())
