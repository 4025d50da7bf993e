"""Export a bundle's network for phones and other runtimes: TensorFlow Lite (LiteRT) or ONNX, float32, with the
bundle's metadata beside it.

`export_bundle(model, "tflite", "face.tflite")` writes ``face.tflite`` and ``face.tflite.json``. The JSON is the
bundle's metadata.json (tasks and their class order, input size and scale, the face-framing settings under
``preprocessing``, ``input.tta_flip``, the metrics) plus an ``export`` entry naming the file's input and output
tensors and saying how to feed them. mtfer.core.backends.ExportedModel runs such a file (LiteRT's interpreter or
ONNX Runtime) with the same post-processing as the Keras model.

Float32, always: a run trained under the ``mixed_bfloat16`` policy (``precision: bfloat16``) has layers that
compute in bfloat16. Its architecture is rebuilt from its config with every dtype policy set to float32 and its
weights (float32 variables under a mixed policy) copied in (mtfer.core.convert.float32_model); the traced float32 forward
function of that copy is what the converters see, and the exported file is checked to hold no 16-bit float tensor.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from mtfer.core import bundles
from mtfer.core.backends import FORMATS, SUFFIXES, format_from_path, metadata_path
from mtfer.core.convert import (
    INPUT_NAME,
    ONNX_OPSET,
    SIGNATURE_KEY,
    ExportError,
    onnx_bytes,
    onnx_unavailable_reason,
    tflite_bytes,
)

# Input settings of older bundles that nothing reads any more (a removed blur-matching step): not exported.
_OBSOLETE_INPUT_KEYS = ("blur_sigma", "blur_threshold")


@dataclass
class ExportResult:
    path: Path
    metadata_path: Path
    format: str
    size_bytes: int
    metadata: dict


def export_metadata(bundle: bundles.Bundle, fmt: str, data: bytes, file_name: str) -> dict:
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
        "created": bundles.now_iso(),
        "converter": converter,
        **({"signature": SIGNATURE_KEY} if fmt == "tflite" else {}),
        "input": {"name": INPUT_NAME, "shape": [-1, size, size, 1], "dtype": "float32", "layout": "NHWC"},
        "outputs": {
            t: {"name": t, "shape": [-1, len(c)], "classes": list(c)} for t, c in bundle.metadata["tasks"].items()
        },
        "how_to_use": (
            f"Find and align each face as mtfer does (gray, {size}x{size}, eyes levelled: the 'preprocessing' "
            f"settings, mtfer.core.faces.find_faces), divide its uint8 pixels by 255 to get float32 in [0, 1], shape "
            f"(N, {size}, {size}, 1). Each output is a softmax over that task's classes, in the order of 'tasks'. "
            "When input.tta_flip is true, also run the left-right mirrored face and average the two probabilities. "
            "When calibration.temperature has a task's temperature T, the probabilities the app shows are "
            "softmax(log(p) / T) of that task's (averaged) probabilities p: the same top class, a trustworthy "
            "confidence."
        ),
    }
    return meta


def export_bundle(
    model: str | os.PathLike | bundles.Bundle | None,
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
    bundle = model if isinstance(model, bundles.Bundle) else bundles.load_bundle(bundles.resolve_model(model, runs_dir))
    data = tflite_bytes(bundle.model) if fmt == "tflite" else onnx_bytes(bundle.model)
    meta = export_metadata(bundle, fmt, data, out.name)
    try:
        with bundles.atomic_path(out) as tmp:  # with the permissions the umask gives: exports are for copying
            tmp.write_bytes(data)
        bundles.atomic_write_json(metadata_path(out), meta)
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from None
    return ExportResult(out, metadata_path(out), fmt, len(data), meta)
