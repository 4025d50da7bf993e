"""Data the tests make themselves: random faces with partial labels, tiny trained runs, tiny data set trees."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np

from mtfer.core import bundles
from mtfer.core.tasks import LEGACY_CLASSES
from mtfer.datasets.splits import Split
from mtfer.train.config import TrainConfig
from mtfer.train.trainer import train


def random_split(n: int, seed: int = 0, size: int = 50) -> Split:
    """Half emotion-only samples (like FER2013), half gender/age samples with race on every other (like UTKFace)."""
    rng = np.random.default_rng(seed)
    labels = np.full((n, 4), -1, dtype=np.int64)
    half = n // 2
    labels[:half, 0] = rng.integers(0, 7, half)
    labels[half:, 1] = rng.integers(0, 2, n - half)
    labels[half:, 3] = rng.integers(0, 5, n - half)
    labels[half::2, 2] = rng.integers(0, 3, len(labels[half::2]))
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    sources = np.array([f"sample{i}.jpg" for i in range(n)])
    datasets = np.array(["emo"] * half + ["attr"] * (n - half))
    return Split(images, labels, sources, datasets)


def tiny_splits(seed: int = 0) -> dict[str, Split]:
    return {"train": random_split(64, seed), "val": random_split(32, seed + 1), "test": random_split(32, seed + 2)}


def tiny_run(folder: Path, **overrides) -> Path:
    """A complete run folder (bundle, history, evaluations) trained for one epoch on random faces."""
    config = TrainConfig(**{"architecture": "fast", "epochs": 1, "batch_size": 16, "augment": False, **overrides})
    return train(config, folder, splits=tiny_splits(), install_signal_handler=False)


def three_class_race_copy(run: Path, target: Path) -> Path:
    """The run as a bundle from before "other": the same network with a three-output race head."""
    import keras

    source = bundles.load_bundle(run)
    model = source.model
    features = model.get_layer("race_logits").input
    logits = keras.layers.Dense(3, name="race_logits")(features)  # the old head is no longer in this graph
    outputs = dict(model.output)
    outputs["race"] = keras.layers.Activation("softmax", name="race")(logits)
    old = keras.Model(model.input, outputs)
    kernel, bias = model.get_layer("race_logits").get_weights()
    old.get_layer("race_logits").set_weights([kernel[:, :3], bias[:3]])
    metadata = json.loads(json.dumps(source.metadata))
    metadata["tasks"]["race"] = list(LEGACY_CLASSES["race"])
    metadata.pop("calibration", None)
    bundles.save_bundle(old, metadata, target)
    return target


def write_utkface_tree(root: Path, n: int = 40, seed: int = 0) -> Path:
    """UTKFace-named chips (<age>_<gender>_<race>_<date>.jpg.chip.jpg) with random content, plus one bad name."""
    rng = np.random.default_rng(seed)
    folder = root / "UTKFace"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        age, gender, race = int(rng.integers(1, 90)), int(rng.integers(0, 2)), int(rng.integers(0, 5))
        image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{age}_{gender}_{race}_2017010{i:09d}.jpg.chip.jpg"), image)
    (folder / "12_0_20170101000000000.jpg.chip.jpg").write_bytes(b"malformed name")
    return root


def write_fer_tree(root: Path, per_class: int = 4, seed: int = 0) -> Path:
    """FER2013-style image folders train|test/<emotion>/*.jpg with random 48x48 content."""
    from mtfer.core.tasks import EMOTION

    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for name in EMOTION.classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                cv2.imwrite(str(folder / f"{split}_{i}.jpg"), rng.integers(0, 256, (48, 48), dtype=np.uint8))
    return root


def wait_healthy(url: str, process: subprocess.Popen, timeout: float) -> None:
    """Wait until a `streamlit run` server answers its health check; fail early if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode} before answering")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as response:
                if response.read().decode().strip() == "ok":
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer {url}/_stcore/health within {timeout:.0f} s")
