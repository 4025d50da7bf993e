"""Size and milliseconds per face of an exported model (LiteRT .tflite, ONNX Runtime .onnx) beside Keras's.

    python benchmarks/export_latency.py [--model default] [--data ../shared/data] [--repeat 200] [--threads N]

Exports the bundle to a temporary folder (mtfer.core.export), then times, in this one process, the same aligned faces
through the Keras model (mtfer.core.backends.predict_arrays: the traced tf.function the app uses) and through each
exported file (mtfer.core.backends.ExportedModel), one face per call (a phone's case) and 64 faces per call. Prints the
median milliseconds per face, the speed-up over the Keras model as the app runs it (its training precision), and
the largest probability difference from Keras in float32. The faces are
FER2013 test images framed with mtfer.core.faces.frame_crop when --data has them, else random pixels (the time does
not depend on what the face shows).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from mtfer.core import backends, bundles, convert, export, faces, preprocess, quiet


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ms_per_face(fn: Callable[[], object], faces_per_call: int, repeat: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000 / faces_per_call)
    return statistics.median(times)


def load_faces(data: Path | None, n: int, config: preprocess.PreprocessConfig) -> tuple[np.ndarray, str]:
    folder = data / "fer2013" / "test" if data else None
    if folder and folder.is_dir():
        every = sorted(folder.glob("*/*.jpg"))
        paths = every[:: max(1, len(every) // n)][:n]
        if paths:
            aligned = np.stack([faces.frame_crop(cv2.imread(str(p)), config).aligned for p in paths])
            return aligned, f"{len(aligned)} FER2013 test faces"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, config.size, config.size), dtype=np.uint8), f"{n} random faces"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="run id, bundle folder, or 'default'")
    parser.add_argument("--data", type=Path, default=bundles.REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--repeat", type=int, default=200, help="timed calls per measurement (median)")
    parser.add_argument("--batch", type=int, default=64, help="faces per call for the batched measurement")
    parser.add_argument("--threads", type=int, default=None, help="LiteRT / ONNX Runtime threads (default: theirs)")
    args = parser.parse_args()

    quiet.import_tensorflow()
    import tensorflow as tf

    from mtfer.core.backends import predict_arrays

    bundle = bundles.load_bundle(bundles.resolve_model(args.model))
    config = preprocess.PreprocessConfig.from_dict(bundle.metadata["preprocessing"])
    aligned, what = load_faces(args.data, args.batch, config)
    one = aligned[:1]
    flip = bool(bundle.metadata["input"].get("tta_flip", False))
    precision = bundle.metadata.get("precision", "float32")
    float32 = convert.float32_model(bundle.model)  # what the exports compute; the bundle itself when float32
    keras_size = (bundle.path / bundles.MODEL_FILE).stat().st_size
    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical cores), TensorFlow {tf.__version__}")
    print(f"model: {bundle.path} ({precision}, tta_flip {flip}), {what}")
    print(
        f"threads: TensorFlow default, LiteRT/ONNX Runtime {args.threads or 'default'}; median of {args.repeat} calls"
    )
    print("every row runs each face and its mirror when tta_flip is on, as the app does\n")

    reference = predict_arrays(float32, aligned, flip=flip)
    rows: list[tuple[str, float, Callable[[np.ndarray], dict]]] = [
        (f"Keras ({precision}, app)", keras_size, lambda a: predict_arrays(bundle.model, a, flip=flip)),
    ]
    if float32 is not bundle.model:
        rows.append(("Keras (float32 copy)", keras_size, lambda a: predict_arrays(float32, a, flip=flip)))
    folder = tempfile.TemporaryDirectory()
    for fmt in ["tflite"] + ([] if convert.onnx_unavailable_reason() else ["onnx"]):
        result = export.export_bundle(bundle, fmt, Path(folder.name) / f"model.{fmt}")
        exported = backends.ExportedModel(result.path, num_threads=args.threads)
        name = {"tflite": "LiteRT (.tflite)", "onnx": "ONNX Runtime (.onnx)"}[fmt]
        rows.append((name, result.size_bytes, exported.predict))
    n = len(aligned)
    print(
        f"{'runtime':<24} {'file MB':>8} {'ms/face (1)':>12} {'x Keras':>8} {f'ms/face ({n})':>13} {'x Keras':>8} {'max |dp|':>9}"
    )
    base_1 = base_n = 0.0
    for name, size, predict in rows:
        diff = max(float(np.abs(predict(aligned)[t] - reference[t]).max()) for t in reference)
        t1 = ms_per_face(lambda p=predict: p(one), 1, args.repeat)
        tn = ms_per_face(lambda p=predict: p(aligned), n, max(10, args.repeat // 10))
        base_1, base_n = base_1 or t1, base_n or tn
        print(f"{name:<24} {size / 1e6:8.2f} {t1:12.3f} {base_1 / t1:8.2f} {tn:13.4f} {base_n / tn:8.2f} {diff:9.1e}")
    folder.cleanup()
    print("max |dp|: the largest probability difference from Keras in float32 (what the exported files compute)")
    if reason := convert.onnx_unavailable_reason():
        print(f"(no ONNX: {reason})")


if __name__ == "__main__":
    main()
