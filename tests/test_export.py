"""mtfer export: a bundle as a float32 .tflite (LiteRT) or .onnx file with its metadata, matching Keras."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import random_split, tiny_run

from mtfer.cli import main
from mtfer.core import backends, bundles, convert, export, faces, preprocess
from mtfer.core.backends import predict_arrays
from mtfer.core.tasks import TASK_NAMES

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory) -> Path:
    """A tiny run trained under the mixed_bfloat16 policy: its layers compute in bfloat16."""
    import keras

    folder = tiny_run(tmp_path_factory.mktemp("export") / "run", precision="bfloat16")
    keras.mixed_precision.set_global_policy("float32")  # training leaves its policy set; the app trains apart
    return folder


@pytest.fixture(scope="module")
def default_export(tmp_path_factory) -> export.ExportResult:
    """The shipped model exported to .tflite (once: a conversion takes seconds)."""
    return export.export_bundle("default", "tflite", tmp_path_factory.mktemp("default") / "sub" / "mtfer.tflite")


def real_faces(shared_data: Path, config: preprocess.PreprocessConfig, per_class: int = 2) -> np.ndarray:
    """FER2013 test images framed the way the app frames a face (frame_crop), (N,50,50) uint8."""
    folders = sorted(p for p in (shared_data / "fer2013" / "test").iterdir() if p.is_dir())
    paths = [q for d in folders for q in sorted(d.glob("*.jpg"))[:per_class]]
    return np.stack([faces.frame_crop(cv2.imread(str(q)), config).aligned for q in paths])


def assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], tolerance: float = TOLERANCE) -> None:
    assert sorted(got) == sorted(want)
    for task in want:
        assert got[task].shape == want[task].shape
        np.testing.assert_allclose(got[task], want[task], atol=tolerance, rtol=0, err_msg=task)


def test_tflite_export_runs_in_litert_like_keras_on_real_faces(default_export, shared_data):
    from ai_edge_litert.interpreter import Interpreter

    bundle = bundles.load_bundle(bundles.DEFAULT_BUNDLE)
    result = default_export
    assert result.path.is_file() and result.metadata_path == result.path.with_name("mtfer.tflite.json")
    aligned = real_faces(shared_data, preprocess.PreprocessConfig.from_dict(bundle.metadata["preprocessing"]))
    assert len(aligned) >= 14
    # The shipped model computes in bfloat16 (trained under mixed_bfloat16); the export is its float32 twin, which
    # is what Keras is compared with here (bf16 rounding alone moves probabilities by ~1e-3).
    keras_probs = predict_arrays(convert.float32_model(bundle.model), aligned)

    # Plain LiteRT, as a phone app would call it: the signature's input 'face', one output per task.
    interpreter = Interpreter(model_path=str(result.path))
    runner = interpreter.get_signature_runner("serving_default")
    raw = runner(face=faces.to_network_input(aligned))
    assert_close({t: np.asarray(raw[t]) for t in TASK_NAMES}, keras_probs)
    # One face at a time too (the batch dimension is dynamic).
    single = runner(face=faces.to_network_input(aligned[:1]))
    np.testing.assert_allclose(single["emotion"][0], keras_probs["emotion"][0], atol=TOLERANCE, rtol=0)
    # The wrapper mtfer gives for exported files applies the bundle's test-time flip and calibration, as the
    # Predictor does.
    flip = bool(bundle.metadata["input"].get("tta_flip", False))
    temperatures = backends.temperatures(bundle.metadata)
    want = predict_arrays(convert.float32_model(bundle.model), aligned, flip=flip, temperatures=temperatures)
    assert_close(backends.ExportedModel(result.path).predict(aligned), want)


def test_the_metadata_beside_the_file_says_how_to_use_it(default_export):
    bundle = bundles.load_bundle(bundles.DEFAULT_BUNDLE)
    result = default_export
    meta = json.loads(result.metadata_path.read_text())
    assert meta["tasks"] == bundle.metadata["tasks"]  # class order, per head
    assert meta["preprocessing"] == bundle.metadata["preprocessing"]
    assert meta["input"]["size"] == 50 and meta["input"]["scale"] == [0.0, 1.0]
    assert meta["input"]["tta_flip"] is bool(bundle.metadata["input"].get("tta_flip", False))
    assert "blur_sigma" not in meta["input"]  # settings nothing reads any more are not exported
    info = meta["export"]
    assert info["format"] == "tflite" and info["precision"] == "float32" and info["file"] == "mtfer.tflite"
    assert info["sha256"] == hashlib.sha256(result.path.read_bytes()).hexdigest()
    assert info["input"] == {"name": "face", "shape": [-1, 50, 50, 1], "dtype": "float32", "layout": "NHWC"}
    assert {t: o["classes"] for t, o in info["outputs"].items()} == bundle.metadata["tasks"]
    bundles.validate_metadata(meta)  # the JSON is a valid bundle metadata


def test_a_bfloat16_run_exports_a_float32_graph(bf16_run, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    bundle = bundles.load_bundle(bf16_run)
    assert bundle.metadata["precision"] == "bfloat16"
    assert not convert.is_float32(bundle.model)
    float32 = convert.float32_model(bundle.model)
    assert convert.is_float32(float32)

    result = export.export_bundle(bundle, "tflite", tmp_path / "bf16.tflite")
    dtypes = {np.dtype(t["dtype"]).name for t in Interpreter(model_path=str(result.path)).get_tensor_details()}
    assert "float32" in dtypes and not dtypes & {"float16", "bfloat16"}
    aligned = random_split(16, seed=5).images
    exported = backends.ExportedModel(result.path).predict(aligned)
    assert_close(exported, predict_arrays(float32, aligned))  # the float32 network, exactly
    assert_close(exported, predict_arrays(bundle.model, aligned), tolerance=0.1)  # bfloat16 rounding only
    assert json.loads(result.metadata_path.read_text())["export"]["source_precision"] == "bfloat16"


def test_exported_model_mirrors_faces_when_the_bundle_says_so(bf16_run, tmp_path):
    result = export.export_bundle(bf16_run, "tflite", tmp_path / "flip.tflite")
    meta = json.loads(result.metadata_path.read_text())
    meta["input"]["tta_flip"] = True
    result.metadata_path.write_text(json.dumps(meta))
    aligned = random_split(8, seed=6).images
    float32 = convert.float32_model(bundles.load_bundle(bf16_run).model)
    assert_close(backends.ExportedModel(result.path).predict(aligned), predict_arrays(float32, aligned, flip=True))


def test_onnx_export_runs_in_onnxruntime_like_keras(bf16_run, tmp_path):
    pytest.importorskip("tf2onnx")
    ort = pytest.importorskip("onnxruntime")
    result = export.export_bundle(bf16_run, "onnx", tmp_path / "model.onnx")
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["face"]
    assert sorted(o.name for o in session.get_outputs()) == sorted(TASK_NAMES)
    aligned = random_split(16, seed=7).images
    float32 = convert.float32_model(bundles.load_bundle(bf16_run).model)
    assert_close(backends.ExportedModel(result.path).predict(aligned), predict_arrays(float32, aligned))
    assert json.loads(result.metadata_path.read_text())["export"]["format"] == "onnx"


def test_onnx_without_tf2onnx_says_why_in_one_line(bf16_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import tf2onnx now raises ImportError
    reason = convert.onnx_unavailable_reason()
    assert reason and "tf2onnx" in reason and "pip install" in reason and "\n" not in reason
    assert main(["export", "--model", str(bf16_run), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mtfer: error: {reason}"
    assert not (tmp_path / "m.onnx").exists()


def test_cli_export_writes_the_file_and_reports_its_size(bf16_run, tmp_path, capsys):
    out = tmp_path / "phone" / "mtfer.tflite"
    assert main(["export", "--model", str(bf16_run), "--out", str(out)]) == 0  # format from the suffix
    printed = capsys.readouterr().out
    assert out.is_file() and backends.metadata_path(out).is_file()
    assert out.stat().st_mode & 0o044 == 0o044  # readable by others (umask 022): for copying to a phone
    assert str(out) in printed and "MB" in printed and "float32" in printed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "tflite", "--out", "{tmp}/model.onnx"], "should end in .tflite"),
        (["--out", "{tmp}/model.bin"], "unknown export format"),
        (["--format", "tflite", "--out", "{tmp}"], "is a folder"),
        (["--model", "{tmp}/missing", "--out", "{tmp}/m.tflite"], "no model"),
    ],
)
def test_cli_export_refuses_bad_arguments_in_one_line(args, message, tmp_path, capsys):
    argv = ["export", *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mtfer: error:") and message in err and "\n" not in err
