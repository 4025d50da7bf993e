"""Median milliseconds per photo, from photo bytes to four labels, with the shipped model.

    python benchmarks/predict_latency.py PHOTO [--repeat 30]

Also prints the share spent in face finding/alignment vs the network, and the network as served (LiteRT, from the
bundle's own file) beside Keras's traced inference function and `model.predict` (baselines, run in the same process).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from mtfer.core import decoding, faces, preprocess
from mtfer.core.inference import Predictor  # noqa: E402


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", type=Path)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    data = args.photo.read_bytes()
    predictor = Predictor()
    found = predictor.predict_image(data)
    print(f"{args.photo.name}: {len(found)} face(s), model {predictor.path}")
    total = median_ms(lambda: predictor.predict_image(data), args.repeat)
    image = decoding.decode_image(data)
    decode = median_ms(lambda: decoding.decode_image(data), args.repeat)
    blaze = median_ms(lambda: faces.find_faces(image, preprocess.PreprocessConfig()), args.repeat)
    haar = median_ms(lambda: faces.find_faces(image, preprocess.PreprocessConfig.paper()), args.repeat)
    aligned = np.stack([f.aligned for f in found]) if found else np.zeros((1, 50, 50), np.uint8)
    network = median_ms(lambda: predictor.predict_faces(aligned), args.repeat)
    keras = Predictor(backend="keras")
    traced = median_ms(lambda: keras.predict_faces(aligned), args.repeat)
    model = keras.bundle.model
    x = faces.to_network_input(aligned)
    baseline = median_ms(lambda: model.predict(x, verbose=0), args.repeat)
    print(f"photo bytes -> four labels: {total:7.1f} ms median")
    print(f"  decode:                   {decode:7.1f} ms")
    print(f"  find + align, BlazeFace:  {blaze:7.1f} ms   Haar (paper) baseline {haar:.1f} ms (x{haar / blaze:.1f})")
    print(f"  (this model frames faces with {predictor.config.detector})")
    print(f"  network ({predictor.backend}, served): {network:7.1f} ms")
    print(f"  network (Keras, traced):  {traced:7.1f} ms   model.predict baseline {baseline:.1f} ms")


if __name__ == "__main__":
    main()
