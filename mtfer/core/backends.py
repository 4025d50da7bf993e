"""Runtimes that run a bundle's network, with ONE post-processing of its outputs: the Keras model (a traced
forward pass), LiteRT for live video, and exported .tflite/.onnx files. Each returns, for aligned uint8 faces,
{task: probabilities} averaged with the mirror image when the bundle says so and calibrated by its temperatures."""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mtfer.core import bundles, convert, faces
from mtfer.core.convert import INPUT_NAME, SIGNATURE_KEY, ExportError
from mtfer.core.quiet import native_stderr_without
from mtfer.core.tasks import LEGACY_CLASSES, TASKS

if TYPE_CHECKING:
    from mtfer.core.inference import Predictor

EPS = 1e-12


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(probs) / T), row-wise, as float32; T = 1 returns the input unchanged."""
    return temperature_scaled(probs, temperature).astype(np.float32)


def temperature_scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    """:func:`apply_temperature` in float64: distinct probabilities stay distinct (float32 could round two close
    ones to a tie and so move the top class), so the top class of every row is kept exactly."""
    probs = np.asarray(probs, dtype=np.float64)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, EPS, 1.0)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=-1, keepdims=True)


# --- a bundle's calibration (metadata.json "calibration") ---------------------------------------------------
CALIBRATION_KEY = "calibration"


def temperatures(metadata: Mapping) -> dict[str, float]:
    """A bundle's ``calibration.temperature.<task>`` ({} for a bundle never calibrated, an older one: its
    probabilities are used as the network gives them). ValueError on a value that is not a positive number."""
    section = metadata.get(CALIBRATION_KEY)
    if section is None:
        return {}
    found = section.get("temperature", {}) if isinstance(section, Mapping) else None
    if not isinstance(found, Mapping):
        raise ValueError(
            f"metadata.json {CALIBRATION_KEY}.temperature must map each task to a positive number, got {found!r}"
        )
    out: dict[str, float] = {}
    for task, value in found.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(float(value)) or float(value) <= 0:
            raise ValueError(
                f"metadata.json {CALIBRATION_KEY}.temperature.{task} must be a positive number, got {value!r}; "
                "run `mtfer calibrate --model ...` again to refit it"
            )
        out[str(task)] = float(value)
    return out


def calibrated(probs: Mapping[str, np.ndarray], temps: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Every task's probabilities with its temperature applied (softmax(log p / T), float64 so that no top class
    moves); tasks without one, or with 1.0, are returned as they are. With a test-time flip the temperature goes on
    the log of the averaged probabilities, as it was fitted (:func:`fit_calibration` is given the same averaged
    probabilities)."""
    return {t: temperature_scaled(p, temps[t]) if temps.get(t, 1.0) != 1.0 else p for t, p in probs.items()}


PREDICT_BATCH = 256
_FORWARD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _forward(model: Any):
    """The model's inference pass as one traced tf.function (any batch size): ~8x faster than eager calls."""
    fn = _FORWARD.get(model)
    if fn is None:
        import tensorflow as tf

        size = int(model.input.shape[1])
        spec = tf.TensorSpec([None, size, size, 1], tf.float32)
        fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        _FORWARD[model] = fn
    return fn


# A network as a function: input (N,S,S,1) float32 in [0,1] -> {task: probabilities (N, classes)}.
Forward = Callable[[np.ndarray], Mapping[str, Any]]


def run_network(
    forward: Forward,
    aligned: np.ndarray,
    classes: Mapping[str, int],
    *,
    size: int | None = None,
    flip: bool = False,
    temperatures: Mapping[str, float] | None = None,
    batch_size: int | None = None,
    one_pass: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """The one post-processing of every runtime: aligned uint8 faces (N,S,S) -> {task: (N, classes) probabilities}.

    `classes`: the number of classes per task (the shape of an empty answer). flip: test-time augmentation, the mean
    of the probabilities of each face and of its mirror image, as two passes, or as one pass of twice the faces with
    `one_pass` (cheaper for LiteRT; the same numbers within float rounding). temperatures: the bundle's calibration
    ({task: T}, :func:`temperatures`), applied to the log of the (averaged) probabilities; the heads it scales come
    back as float64, their top classes unchanged. batch_size: faces per pass (all at once by default). progress:
    called with (faces done, faces) after each batch."""
    aligned = np.asarray(aligned)
    if len(aligned) == 0:
        return {t: np.zeros((0, width(t, int(n))), np.float32) for t, n in classes.items()}
    out: dict[str, list[np.ndarray]] = {t: [] for t in classes}
    step = batch_size or len(aligned)
    for start in range(0, len(aligned), step):
        x = faces.to_network_input(aligned[start : start + step], size=size)
        if flip and one_pass:
            result = forward(np.ascontiguousarray(np.concatenate([x, x[:, :, ::-1]]), np.float32))
            m = len(x)
            probs = {t: np.asarray(result[t], np.float32) for t in classes}
            probs = {t: (p[:m] + p[m:]) / 2 for t, p in probs.items()}
        else:
            result = forward(x)
            probs = {t: np.asarray(result[t], np.float32) for t in classes}
            if flip:
                mirrored = forward(np.ascontiguousarray(x[:, :, ::-1]))
                probs = {t: (p + np.asarray(mirrored[t], np.float32)) / 2 for t, p in probs.items()}
        for t, p in probs.items():
            out[t].append(p)
        if progress is not None:
            progress(min(start + step, len(aligned)), len(aligned))
    joined = {t: np.concatenate(v) for t, v in out.items()}
    return padded(calibrated(joined, temperatures) if temperatures else joined)


def width(task: str, heads: int) -> int:
    """How many probabilities a task's answer has: its classes today, for an older bundle's narrower head too."""
    known = TASKS.get(task)
    return known.num_classes if known is not None and heads == len(LEGACY_CLASSES.get(task, ())) else heads


def padded(probs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An older bundle's heads (mtfer.core.tasks.LEGACY_CLASSES: a prefix of today's classes) with zero columns for
    the classes appended since, which that network cannot give: every answer has today's classes, in their order."""
    out = {}
    for t, p in probs.items():
        extra = width(t, p.shape[-1]) - p.shape[-1]
        out[t] = np.pad(p, [(0, 0)] * (p.ndim - 1) + [(0, extra)]) if extra > 0 else p
    return out


def predict_arrays(
    model: Any,
    images: np.ndarray,
    batch_size: int = PREDICT_BATCH,
    *,
    flip: bool = False,
    temperatures: Mapping[str, float] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """A Keras model's probabilities for uint8 faces (N,S,S), through :func:`run_network` (a traced forward pass,
    `batch_size` faces at a time; `progress(done, total)` after each)."""
    classes = {t: int(model.output[t].shape[-1]) for t in model.output}
    return run_network(
        _forward(model), images, classes, flip=flip, temperatures=temperatures, batch_size=batch_size, progress=progress
    )


FORMATS = ("tflite", "onnx")
SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx"}


def metadata_path(path: str | os.PathLike) -> Path:
    """Where the metadata of an exported file goes: the file's name + '.json' (face.tflite -> face.tflite.json)."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def format_from_path(path: str | os.PathLike) -> str | None:
    suffix = Path(path).suffix.lower()
    return next((fmt for fmt, s in SUFFIXES.items() if s == suffix), None)


class ExportedModel:
    """An exported .tflite (LiteRT interpreter) or .onnx (ONNX Runtime) file with its metadata JSON, run the way
    mtfer runs the Keras model: `predict(faces)` takes aligned uint8 faces (N,S,S) and returns {task: (N, classes)
    probabilities}, averaged with the mirror image when the metadata says input.tta_flip and calibrated by its
    calibration.temperature, as the Predictor gives them. Not thread-safe."""

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"exported model {self.path} not found")
        self.metadata = bundles.read_json(metadata_path(self.path))
        bundles.validate_metadata(self.metadata, str(metadata_path(self.path)))
        self.format = self.metadata.get("export", {}).get("format") or format_from_path(self.path)
        if self.format not in FORMATS:
            raise ExportError(f"{self.path}: unknown export format {self.format!r}")
        self.tasks: dict[str, list[str]] = {t: list(c) for t, c in self.metadata["tasks"].items()}
        self.size = int(self.metadata["input"]["size"])
        self.flip = bool(self.metadata["input"].get("tta_flip", False))
        self.temperatures = temperatures(self.metadata)  # applied as the Predictor applies them
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
        classes = {t: len(c) for t, c in self.tasks.items()}
        return run_network(self.run, aligned, classes, size=self.size, flip=self.flip, temperatures=self.temperatures)


def serving_bytes(bundle: bundles.Bundle) -> bytes:
    """The bundle's network as a float32 TensorFlow Lite flatbuffer: its SERVING_FILE (ExportError unless it is the
    very file saved with the bundle: a stale or foreign network must never answer in its name), else converted from
    its Keras model now (a few seconds, with TensorFlow)."""
    file = bundle.serving_file
    if file is None:
        return convert.tflite_bytes(bundle.model)
    try:
        data = file.read_bytes()
    except OSError as error:
        raise ExportError(f"cannot read {file}: {error.strerror or error}") from None
    if hashlib.sha256(data).hexdigest() != bundle.metadata[bundles.SERVING_KEY].get("sha256"):
        raise ExportError(f"{file.name} is not the one saved with it (its sha256 differs from metadata.json's)")
    return data


class LiteNetwork:
    """A predictor's network run by LiteRT (:func:`serving_bytes`: the bundle's own LiteRT file, or its Keras model
    converted): aligned uint8 faces (N,S,S) -> {task: probabilities}, averaged with the mirror image when the model
    says so (input.tta_flip) and calibrated by its temperatures, through the one post-processing
    (:func:`run_network`) that the Keras model goes through too. A model trained in bfloat16 runs here in float32
    (probabilities within about 0.01 of its Keras model's; a float32 one within 1e-5).

    Why: LiteRT needs no TensorFlow (a Predictor served this way starts in a second, not ten) and runs one face
    about twice as fast. And for live video inside a Streamlit server, where every script run ends with
    keras.backend.clear_session(), which empties TensorFlow's kernel cache so that the next Keras pass re-optimises
    the whole graph first (seconds on a busy machine), a LiteRT interpreter keeps its state. One interpreter per
    thread (interpreters are not thread-safe). Raises ValueError (mtfer.core.convert.ExportError) for a file that does
    not match the bundle's metadata or a model that cannot be converted, ImportError without ai-edge-litert."""

    def __init__(self, predictor: Predictor, num_threads: int = 1):
        import ai_edge_litert.interpreter  # noqa: F401  (ImportError early, before a slow conversion)

        self.classes = {t: list(c) for t, c in predictor.classes.items()}
        self.size = int(predictor.config.size)
        self.flip = bool(predictor.flip)
        self.temperatures = dict(getattr(predictor, "temperatures", {}))  # the bundle's calibration, if any
        self.num_threads = num_threads
        self._data = serving_bytes(predictor.bundle)
        self._local = threading.local()
        self._check(predictor.bundle)

    def _check(self, bundle: bundles.Bundle) -> None:
        """The network's outputs are the metadata's heads, each with its classes: fails now, not on a face."""
        heads = {t: len(c) for t, c in bundle.metadata["tasks"].items()}
        try:
            with native_stderr_without(_XNNPACK_NOTICE):  # said on the first pass, not when the interpreter is made
                out = self._run(np.zeros((1, self.size, self.size, 1), np.float32))
        except (ValueError, RuntimeError, TypeError) as error:  # a file whose input is not (N, size, size, 1)
            raise ExportError(f"{bundle.path.name}'s LiteRT network does not run: {str(error)[:200]}") from None
        got = {t: int(np.asarray(v).shape[-1]) for t, v in out.items()}
        if got != heads:
            raise ExportError(f"{bundle.path.name}'s LiteRT network has heads {got}; its metadata says {heads}")

    def _runner(self) -> Any:
        runner = getattr(self._local, "runner", None)
        if runner is None:
            from ai_edge_litert.interpreter import Interpreter

            with native_stderr_without(_XNNPACK_NOTICE):
                try:
                    interpreter = Interpreter(model_content=self._data, num_threads=self.num_threads)
                    runner = interpreter.get_signature_runner(SIGNATURE_KEY)
                except (ValueError, RuntimeError) as error:  # not a TensorFlow Lite file, another signature
                    raise ExportError(f"not a LiteRT network of mtfer's: {str(error)[:200]}") from None
            self._local.runner = runner
        return runner

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return self._runner()(**{INPUT_NAME: np.ascontiguousarray(x, np.float32)})

    def __call__(
        self, aligned: np.ndarray, progress: Callable[[int, int], None] | None = None, calibrate: bool = True
    ) -> dict[str, np.ndarray]:
        classes = {t: len(c) for t, c in self.classes.items()}
        return run_network(
            self._run,
            aligned,
            classes,
            size=self.size,
            flip=self.flip,
            temperatures=self.temperatures if calibrate else None,
            one_pass=True,
            batch_size=PREDICT_BATCH,
            progress=progress,
        )


_XNNPACK_NOTICE = re.compile(r"^INFO: Created TensorFlow Lite XNNPACK delegate")
