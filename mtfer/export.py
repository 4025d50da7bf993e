"""Export a bundle's network for phones and other runtimes: TensorFlow Lite (LiteRT) or ONNX, float32, with the
bundle's metadata beside it.

`export_bundle(model, "tflite", "face.tflite")` writes ``face.tflite`` and ``face.tflite.json``. The JSON is the
bundle's metadata.json (tasks and their class order, input size and scale, the face-framing settings under
``preprocessing``, ``input.tta_flip``, the metrics) plus an ``export`` entry naming the file's input and output
tensors and saying how to feed them. :class:`ExportedModel` runs such a file (LiteRT's interpreter or ONNX
Runtime) the way :func:`mtfer.inference.predict_arrays` runs the Keras model.

Float32, always: a run trained under the ``mixed_bfloat16`` policy (``precision: bfloat16``) has layers that
compute in bfloat16. Its architecture is rebuilt from its config with every dtype policy set to float32 and its
weights (float32 variables under a mixed policy) copied in (:func:`float32_model`); the traced float32 forward
function of that copy is what the converters see, and the exported file is checked to hold no 16-bit float tensor.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtfer import calibration, faces, runs

FORMATS = ("tflite", "onnx")
SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx"}
INPUT_NAME = "face"
SIGNATURE_KEY = "serving_default"
ONNX_OPSET = 17  # ONNX Runtime 1.14+ (desktop and mobile) runs it
# Dtype names that make a layer compute in 16 bits; rewritten to float32 by float32_model.
_HALF_DTYPES = {"mixed_bfloat16", "mixed_float16", "bfloat16", "float16"}
# Input settings of older bundles that nothing reads any more (a removed blur-matching step): not exported.
_OBSOLETE_INPUT_KEYS = ("blur_sigma", "blur_threshold")


class ExportError(ValueError):
    """An export that cannot be made, with a one-line reason for the user."""


@dataclass
class ExportResult:
    path: Path
    metadata_path: Path
    format: str
    size_bytes: int
    metadata: dict


def metadata_path(path: str | os.PathLike) -> Path:
    """Where the metadata of an exported file goes: the file's name + '.json' (face.tflite -> face.tflite.json)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def format_from_path(path: str | os.PathLike) -> str | None:
    suffix = Path(path).suffix.lower()
    return next((fmt for fmt, s in SUFFIXES.items() if s == suffix), None)


def onnx_unavailable_reason() -> str | None:
    """Why ONNX export cannot run here (a one-line message), or None when its packages are installed. Cheap: looks
    the packages up without importing them (tf2onnx imports TensorFlow)."""
    import importlib.util

    missing = [module for module in ("tf2onnx", "onnx") if importlib.util.find_spec(module) is None]
    if missing:
        return (
            f"ONNX export needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            "pip install 'mtfer[onnx]' (or use --format tflite)"
        )
    return None


# --- float32 network ---------------------------------------------------------------------------------------


def _float32_config(value: Any) -> Any:
    """A Keras config with every 16-bit dtype (policy names, tensor dtypes) replaced by float32."""
    if isinstance(value, dict):
        return {k: _float32_config(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_float32_config(v) for v in value]
    if isinstance(value, str) and value in _HALF_DTYPES:
        return "float32"
    return value


def is_float32(model: Any) -> bool:
    """Whether every layer of `model` computes and keeps its weights in float32."""
    return all(
        getattr(layer, "compute_dtype", "float32") == "float32"
        and getattr(layer, "variable_dtype", "float32") in (None, "float32")
        for layer in model.layers
    )


def float32_model(model: Any) -> Any:
    """`model` itself when it is all float32; else the same architecture rebuilt with float32 dtype policies and the
    same weights. ExportError when the rebuilt model is still not float32 or its outputs differ in structure."""
    if is_float32(model):
        return model
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")  # layers whose config names no dtype take the global policy
    try:
        rebuilt = model.__class__.from_config(_float32_config(model.get_config()))
        rebuilt.set_weights([np.asarray(w, np.float32) for w in model.get_weights()])
    except (ValueError, TypeError, KeyError) as exc:
        raise ExportError(f"could not rebuild the model in float32: {str(exc).splitlines()[0][:200]}") from None
    finally:
        keras.config.set_dtype_policy(previous)
    if not isinstance(rebuilt, keras.Model) or not is_float32(rebuilt):
        raise ExportError("could not rebuild the model in float32 (a layer keeps a 16-bit dtype)")
    if sorted(rebuilt.output) != sorted(model.output):
        raise ExportError("the float32 rebuild of the model has different outputs")
    return rebuilt


def _forward(model: Any):
    """The float32 inference pass as a traced function of one input named 'face' (N,S,S,1), any batch size,
    returning {task: probabilities}."""
    import tensorflow as tf

    size = int(model.input.shape[1])
    spec = tf.TensorSpec([None, size, size, 1], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def forward(face):
        outputs = model(face, training=False)
        return {task: tf.identity(outputs[task], name=task) for task in outputs}

    return forward, [spec]


# --- converters --------------------------------------------------------------------------------------------


def tflite_bytes(model: Any) -> bytes:
    """A float32 TensorFlow Lite flatbuffer of `model` (builtin ops only): input 'face', one output per task.

    Through a SavedModel written by Keras's ExportArchive (the model tracked, so its variables become constants):
    TFLiteConverter.from_concrete_functions on a Keras 3 model keeps them as uninitialised resource variables."""
    import tempfile

    import keras
    import tensorflow as tf

    model = float32_model(model)
    size = int(model.input.shape[1])
    spec = tf.TensorSpec([None, size, size, 1], tf.float32, name=INPUT_NAME)
    with tempfile.TemporaryDirectory(prefix="mtfer-export-") as folder:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(SIGNATURE_KEY, lambda face: model(face, training=False), [spec])
        archive.write_out(folder, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=[SIGNATURE_KEY])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.optimizations = []  # no quantization: the probabilities must match Keras
        try:
            data = converter.convert()
        except Exception as exc:  # the converter raises ConverterError and others
            raise ExportError(f"TensorFlow Lite conversion failed: {str(exc).splitlines()[0][:200]}") from None
    _check_tflite(data, list(model.output))
    return data


def _check_tflite(data: bytes, tasks: list[str]) -> None:
    """The converted file has the expected signature and no 16-bit float tensor (ExportError otherwise)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data)
    signature = interpreter.get_signature_list().get(SIGNATURE_KEY, {})
    if signature.get("inputs") != [INPUT_NAME] or sorted(signature.get("outputs", [])) != sorted(tasks):
        raise ExportError(
            f"the converted model has signature {signature}; expected input {INPUT_NAME!r}, outputs {tasks}"
        )
    half = sorted({np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()} & {"float16", "bfloat16"})
    if half:
        raise ExportError(f"the converted model holds {', '.join(half)} tensors; expected float32 only")


def onnx_bytes(model: Any, opset: int = ONNX_OPSET) -> bytes:
    """A float32 ONNX graph of `model` (tf2onnx): input 'face', one output per task. ExportError when tf2onnx is
    missing or fails."""
    if reason := onnx_unavailable_reason():
        raise ExportError(reason)
    import logging

    try:
        import tf2onnx
    except Exception as exc:  # a broken install (a protobuf it does not support, ...) raises anything at import
        raise ExportError(
            f"tf2onnx fails to import here: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        ) from None
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    model = float32_model(model)
    forward, spec = _forward(model)
    try:
        proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=opset)
    except Exception as exc:  # tf2onnx raises many types
        raise ExportError(f"ONNX conversion failed: {str(exc).splitlines()[0][:200]}") from None
    for tensor in proto.graph.initializer:
        if tensor.data_type not in (1, 6, 7):  # FLOAT, INT32, INT64 (shapes)
            raise ExportError(f"the ONNX graph holds a tensor of ONNX type {tensor.data_type}; expected float32")
    return proto.SerializeToString()


# --- metadata and files ------------------------------------------------------------------------------------


def export_metadata(bundle: runs.Bundle, fmt: str, data: bytes, file_name: str) -> dict:
    """The bundle's metadata plus an 'export' entry describing the file (see the module docstring)."""
    import tensorflow as tf

    meta = {k: v for k, v in bundle.metadata.items()}
    size = bundle.input_size
    meta["input"] = {k: v for k, v in meta["input"].items() if k not in _OBSOLETE_INPUT_KEYS}
    meta["input"]["tta_flip"] = bool(meta["input"].get("tta_flip", False))
    if fmt == "tflite":
        converter = f"tf.lite.TFLiteConverter.from_concrete_functions (TensorFlow {tf.__version__})"
    else:
        import tf2onnx

        converter = f"tf2onnx {tf2onnx.__version__}, opset {ONNX_OPSET} (TensorFlow {tf.__version__})"
    meta["export"] = {
        "format": fmt,
        "file": file_name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "precision": "float32",
        "source_model": str(bundle.path),
        "source_precision": bundle.metadata.get("precision", "float32"),
        "created": runs.now_iso(),
        "converter": converter,
        **({"signature": SIGNATURE_KEY} if fmt == "tflite" else {}),
        "input": {"name": INPUT_NAME, "shape": [-1, size, size, 1], "dtype": "float32", "layout": "NHWC"},
        "outputs": {
            t: {"name": t, "shape": [-1, len(c)], "classes": list(c)} for t, c in bundle.metadata["tasks"].items()
        },
        "how_to_use": (
            f"Find and align each face as mtfer does (gray, {size}x{size}, eyes levelled: the 'preprocessing' "
            f"settings, mtfer.faces.find_faces), divide its uint8 pixels by 255 to get float32 in [0, 1], shape "
            f"(N, {size}, {size}, 1). Each output is a softmax over that task's classes, in the order of 'tasks'. "
            "When input.tta_flip is true, also run the left-right mirrored face and average the two probabilities. "
            "When calibration.temperature has a task's temperature T, the probabilities the app shows are "
            "softmax(log(p) / T) of that task's (averaged) probabilities p: the same top class, a trustworthy "
            "confidence."
        ),
    }
    return meta


def _umask() -> int:
    """The process's umask, read without changing it (os.umask would, for a moment, in every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def export_bundle(
    model: str | os.PathLike | runs.Bundle | None,
    fmt: str | None,
    out: str | os.PathLike,
    *,
    runs_dir: str | os.PathLike | None = None,
) -> ExportResult:
    """Export a bundle ('default', 'active'/None, a run id, a folder, or a loaded Bundle) to `out` in `fmt`
    ('tflite' or 'onnx'; None: from `out`'s suffix), with `out`.json beside it. Both files are written atomically."""
    out = Path(out)
    fmt = fmt or format_from_path(out)
    if fmt not in FORMATS:
        raise ExportError(
            f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)} (or an --out ending in .tflite/.onnx)"
        )
    if out.is_dir() or str(out).endswith(os.sep):
        raise ExportError(f"--out {out} is a folder; give a file name such as {out / ('model' + SUFFIXES[fmt])}")
    if out.suffix.lower() != SUFFIXES[fmt]:
        raise ExportError(f"--out {out.name} should end in {SUFFIXES[fmt]} for format {fmt}")
    if fmt == "onnx" and (reason := onnx_unavailable_reason()):
        raise ExportError(reason)
    bundle = model if isinstance(model, runs.Bundle) else runs.load_bundle(runs.resolve_model(model, runs_dir))
    data = tflite_bytes(bundle.model) if fmt == "tflite" else onnx_bytes(bundle.model)
    meta = export_metadata(bundle, fmt, data, out.name)
    try:
        umask = _umask()
        with runs.atomic_path(out) as tmp:
            tmp.write_bytes(data)
        runs.atomic_write_json(metadata_path(out), meta)
        for path in (out, metadata_path(out)):  # temporary files are private (0600); exports are for copying
            os.chmod(path, 0o666 & ~umask)
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from None
    return ExportResult(out, metadata_path(out), fmt, len(data), meta)


# --- running an exported file ------------------------------------------------------------------------------


class ExportedModel:
    """An exported .tflite (LiteRT interpreter) or .onnx (ONNX Runtime) file with its metadata JSON, run the way
    mtfer runs the Keras model: `predict(faces)` takes aligned uint8 faces (N,S,S) and returns {task: (N, classes)
    probabilities}, averaged with the mirror image when the metadata says input.tta_flip and calibrated by its
    calibration.temperature, as the Predictor gives them. Not thread-safe."""

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"exported model {self.path} not found")
        self.metadata = runs.read_json(metadata_path(self.path))
        runs.validate_metadata(self.metadata, str(metadata_path(self.path)))
        self.format = self.metadata.get("export", {}).get("format") or format_from_path(self.path)
        if self.format not in FORMATS:
            raise ExportError(f"{self.path}: unknown export format {self.format!r}")
        self.tasks: dict[str, list[str]] = {t: list(c) for t, c in self.metadata["tasks"].items()}
        self.size = int(self.metadata["input"]["size"])
        self.flip = bool(self.metadata["input"].get("tta_flip", False))
        self.temperatures = calibration.temperatures(self.metadata)  # applied as the Predictor applies them
        if self.format == "tflite":
            from ai_edge_litert.interpreter import Interpreter

            self._interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads)
            self._runner = self._interpreter.get_signature_runner(SIGNATURE_KEY)
        else:
            try:
                import onnxruntime as ort
            except ImportError:
                raise ExportError("running an ONNX export needs onnxruntime: pip install onnxruntime") from None
            options = ort.SessionOptions()
            if num_threads:
                options.intra_op_num_threads = num_threads
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """One pass over network input (N,S,S,1) float32 in [0,1]: {task: probabilities}, no mirroring."""
        x = np.ascontiguousarray(x, np.float32)
        if self.format == "tflite":
            result = self._runner(**{INPUT_NAME: x})
        else:
            names = [o.name for o in self._session.get_outputs()]
            result = dict(zip(names, self._session.run(None, {INPUT_NAME: x}), strict=True))
        return {t: np.asarray(result[t], np.float32) for t in self.tasks}

    def predict(self, aligned: np.ndarray) -> dict[str, np.ndarray]:
        if len(aligned) == 0:
            return {t: np.zeros((0, len(c)), np.float32) for t, c in self.tasks.items()}
        x = faces.to_network_input(np.asarray(aligned), size=self.size)
        probs = self.run(x)
        if self.flip:
            mirrored = self.run(x[:, :, ::-1])
            probs = {t: (probs[t] + mirrored[t]) / 2 for t in probs}
        return calibration.calibrated(probs, self.temperatures)
