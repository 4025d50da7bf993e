"""Training faces/s of mtfer's trainer against a reference loop in the authors' style, same process, same model.

Reference (as in the authors' published notebook): a Python generator yielding float32 batches of 32 three-channel
50x50 images, float32 weights, `model.fit` on the generator. mtfer: uint8 arrays through tf.data (cast, scale and
one-hot in the graph, prefetch), one-channel input, mixed bfloat16 where the CPU or a GPU supports it.

    python benchmarks/train_throughput.py [--architecture paper] [--steps 40]

Prints faces/s for each and the ratio. Numbers are noisy on a shared machine: compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from mtfer.core.model import build_model, count_flops  # noqa: E402
from mtfer.core.tasks import TASK_NAMES, TASKS  # noqa: E402
from mtfer.datasets.splits import Split
from mtfer.train.config import TrainConfig, resolve_precision
from mtfer.train.pipeline import make_dataset  # noqa: E402
from mtfer.train.trainer import compile_model


def fake_split(n: int, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    labels = np.stack([rng.integers(0, TASKS[t].num_classes, n) for t in TASK_NAMES], axis=1)
    labels[: n // 2, 1:] = -1  # half emotion-only, like FER2013 in the multi-task mix
    return Split(rng.integers(0, 256, (n, 50, 50), dtype=np.uint8), labels, np.array([""] * n), np.array([""] * n))


def reference_generator(split: Split, batch: int = 32):
    """The authors' style: Python loop, float32, 3 channels, one-hot lists built per batch."""
    while True:
        for start in range(0, len(split) - batch + 1, batch):
            images = split.images[start : start + batch].astype("float32") / 255.0
            x = np.repeat(images[..., None], 3, axis=-1)
            labels = split.labels[start : start + batch]
            y = {
                t: keras.utils.to_categorical(np.maximum(labels[:, i], 0), TASKS[t].num_classes)
                for i, t in enumerate(TASK_NAMES)
            }
            w = {t: (labels[:, i] >= 0).astype("float32") for i, t in enumerate(TASK_NAMES)}
            yield x, y, w


def reference_model(architecture: str) -> keras.Model:
    base = build_model(architecture)
    inputs = keras.Input((50, 50, 3))
    gray = keras.layers.Lambda(lambda t: t[..., :1], output_shape=(50, 50, 1))(inputs)  # 3-channel input, same net
    return keras.Model(inputs, base(gray))


def timed_fit(model: keras.Model, data, steps: int) -> float:
    model.fit(data, steps_per_epoch=3, epochs=1, verbose=0)  # warm-up: tracing
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * 32 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", default="paper")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    split = fake_split(32 * (args.steps + 8))
    config = TrainConfig(architecture=args.architecture)

    keras.mixed_precision.set_global_policy("float32")
    ref = reference_model(args.architecture)
    compile_model(ref, config)
    ref_rate = timed_fit(ref, reference_generator(split), args.steps)

    precision = resolve_precision("auto")
    rates = {}
    for policy in ("float32", "bfloat16") if precision == "bfloat16" else ("float32",):
        keras.mixed_precision.set_global_policy("mixed_bfloat16" if policy == "bfloat16" else "float32")
        model = build_model(args.architecture)
        compile_model(model, config)
        ds = make_dataset(split, TASK_NAMES, 32, training=True, augment=True, seed=0).repeat()
        rates[policy] = timed_fit(model, ds, args.steps)

    print(f"architecture {args.architecture}: {count_flops(build_model(args.architecture)) / 1e6:.0f} MFLOPs per face")
    print(f"reference (generator, float32, 3ch): {ref_rate:7.1f} faces/s")
    for policy, rate in rates.items():
        print(f"mtfer tf.data {policy:9s}:           {rate:7.1f} faces/s   x{rate / ref_rate:.2f} vs reference")


if __name__ == "__main__":
    main()
