"""Size and milliseconds per face of an exported model (LiteRT .tflite, ONNX Runtime .onnx) beside Keras's.

    python benchmarks/export_latency.py [--model default] [--data ../shared/data] [--repeat 200] [--threads N]

Exports the bundle to a temporary folder (mtfer.export), then times, in this one process, the same aligned faces
through the Keras model (mtfer.inference.predict_arrays: the traced tf.function the app uses) and through each
exported file (mtfer.export.ExportedModel), one face per call (a phone's case) and 64 faces per call. Prints the
median milliseconds per face, the ratio Keras / exported, and the largest probability difference. The faces are
FER2013 test images framed with mtfer.faces.frame_crop when --data has them, else random pixels (the time does
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

from mtfer import export, faces, quiet, runs  # noqa: E402


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


def load_faces(data: Path | None, n: int, config: faces.PreprocessConfig) -> tuple[np.ndarray, str]:
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
    parser.add_argument("--data", type=Path, default=runs.REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--repeat", type=int, default=200, help="timed calls per measurement (median)")
    parser.add_argument("--batch", type=int, default=64, help="faces per call for the batched measurement")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="LiteRT / ONNX Runtime threads")
    args = parser.parse_args()

    quiet.import_tensorflow()
    import tensorflow as tf

    from mtfer.inference import predict_arrays

    bundle = runs.load_bundle(runs.resolve_model(args.model))
    config = faces.PreprocessConfig.from_dict(bundle.metadata["preprocessing"])
    aligned, what = load_faces(args.data, args.batch, config)
    one = aligned[:1]
    keras_model = export.float32_model(bundle.model)  # what the exports compute; the bundle itself when float32
    keras_size = (bundle.path / runs.MODEL_FILE).stat().st_size
    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical cores), TensorFlow {tf.__version__}")
    print(f"model: {bundle.path} ({bundle.metadata.get('precision', 'float32')}), {what}")
    print(f"threads: TensorFlow default, LiteRT/ONNX Runtime {args.threads}; median of {args.repeat} calls\n")

    keras_probs = predict_arrays(keras_model, aligned)
    keras_1 = ms_per_face(lambda: predict_arrays(keras_model, one), 1, args.repeat)
    keras_n = ms_per_face(lambda: predict_arrays(keras_model, aligned), len(aligned), max(10, args.repeat // 10))
    header = f"{'runtime':<22} {'file MB':>8} {'ms/face (1)':>12} {'x Keras':>8} {'ms/face (' + str(len(aligned)) + ')':>13} {'x Keras':>8} {'max |dp|':>9}"
    print(header)
    print(
        f"{'Keras (model.keras)':<22} {keras_size / 1e6:8.2f} {keras_1:12.3f} {1:8.2f} {keras_n:13.4f} {1:8.2f} {0:9.1e}"
    )
    formats = ["tflite"] + ([] if export.onnx_unavailable_reason() else ["onnx"])
    with tempfile.TemporaryDirectory() as folder:
        for fmt in formats:
            result = export.export_bundle(bundle, fmt, Path(folder) / f"model.{fmt}")
            exported = export.ExportedModel(result.path, num_threads=args.threads)
            probs = exported.predict(aligned)
            diff = max(float(np.abs(probs[t] - keras_probs[t]).max()) for t in probs)
            t1 = ms_per_face(lambda e=exported: e.predict(one), 1, args.repeat)
            tn = ms_per_face(lambda e=exported: e.predict(aligned), len(aligned), max(10, args.repeat // 10))
            name = {"tflite": "LiteRT (.tflite)", "onnx": "ONNX Runtime (.onnx)"}[fmt]
            print(
                f"{name:<22} {result.size_bytes / 1e6:8.2f} {t1:12.3f} {keras_1 / t1:8.2f} {tn:13.4f} "
                f"{keras_n / tn:8.2f} {diff:9.1e}"
            )
    if reason := export.onnx_unavailable_reason():
        print(f"(no ONNX: {reason})")


if __name__ == "__main__":
    main()
