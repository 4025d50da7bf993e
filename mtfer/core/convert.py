"""The network converted, in memory, for other runtimes: a float32 copy (a model trained in bfloat16 runs
anywhere), TensorFlow Lite bytes for LiteRT, ONNX bytes for ONNX Runtime. Files are written by mtfer.core.export."""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from typing import Any

import numpy as np

ONNX_OPSET = 17  # ONNX Runtime 1.14+ (desktop and mobile) runs it


# Dtype names that make a layer compute in 16 bits; rewritten to float32 by float32_model.
_HALF_DTYPES = {"mixed_bfloat16", "mixed_float16", "bfloat16", "float16"}


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


def tflite_bytes(model: Any) -> bytes:
    """A float32 TensorFlow Lite flatbuffer of `model` (builtin ops only): input 'face', one output per task.

    Through a SavedModel written by Keras's ExportArchive (the model tracked, so its variables become constants):
    TFLiteConverter.from_concrete_functions on a Keras 3 model keeps them as uninitialised resource variables."""

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


INPUT_NAME = "face"
SIGNATURE_KEY = "serving_default"


class ExportError(ValueError):
    """An export that cannot be made, with a one-line reason for the user."""


def onnx_unavailable_reason() -> str | None:
    """Why ONNX export cannot run here (a one-line message), or None when its packages are installed. Cheap: looks
    the packages up without importing them (tf2onnx imports TensorFlow)."""

    missing = [module for module in ("tf2onnx", "onnx") if importlib.util.find_spec(module) is None]
    if missing:
        return (
            f"ONNX export needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            "pip install 'mtfer[onnx]' (or use --format tflite)"
        )
    return None
