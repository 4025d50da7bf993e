"""Packaging: the package list names every package, and a wheel carries the shipped model (as package data of
mtfer.shipped) and predicts a photo where no checkout is near; the shipped model is never written to."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtfer import cli
from mtfer.core import bundles

REPO = Path(__file__).resolve().parents[1]


def test_the_package_list_names_every_package():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "mtfer").rglob("__init__.py")}
    assert listed == found | {"mtfer.shipped"}, "pyproject.toml's packages must list every folder of mtfer/"


def test_the_shipped_model_is_never_calibrated_in_place(capsys):
    before = (bundles.DEFAULT_BUNDLE / bundles.METADATA_FILE).read_bytes()
    assert cli.main(["calibrate", "--model", "default"]) == 2
    assert "the shipped model is never changed" in capsys.readouterr().err
    assert (bundles.DEFAULT_BUNDLE / bundles.METADATA_FILE).read_bytes() == before


@pytest.mark.slow
def test_a_wheel_carries_the_model_and_predicts_a_photo(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if built.returncode and "No matching distribution" in built.stderr + built.stdout:
        pytest.skip("the build backend (setuptools) cannot be downloaded here")
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("mtfer-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    photo = tmp_path / "photo.jpg"
    canvas = np.full((300, 300, 3), 180, np.uint8)
    cv2.circle(canvas, (150, 150), 60, (90, 120, 200), -1)
    cv2.imwrite(str(photo), canvas)
    # The installed package, not this checkout: run elsewhere, the wheel's folder first on the path (its
    # dependencies are this environment's).
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = "from mtfer.core import bundles; import mtfer; print(mtfer.__file__); print(bundles.DEFAULT_BUNDLE)"
    where = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    package, model = where.stdout.split()
    assert Path(package).is_relative_to(site) and Path(model) == site / "mtfer" / "shipped" / "default"
    out = subprocess.run(
        [sys.executable, "-m", "mtfer.cli", "predict", str(photo), "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert '"image"' in out.stdout and str(photo) in out.stdout
