"""Architectures: the paper's network and faster ones, each with one softmax head per task."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from mtfer.core.tasks import get_task

if TYPE_CHECKING:
    import keras

# The authors' published network (the paper's architecture table): three blocks of two convolutions, dropout
# decreasing with depth, then Dense(128).
PAPER_BLOCKS: tuple[tuple[int, int, float], ...] = ((64, 5, 0.6), (128, 3, 0.5), (256, 3, 0.4))
PAPER_DENSE_UNITS = 128
PAPER_DENSE_DROPOUT = 0.4


def _conv_elu_bn(x: keras.KerasTensor, filters: int, kernel: int, name: str) -> keras.KerasTensor:
    from keras import layers  # loads TensorFlow (seconds): only when a network is built

    x = layers.Conv2D(
        filters, kernel, padding="same", activation="elu", kernel_initializer="he_normal", name=f"{name}_conv"
    )(x)
    return layers.BatchNormalization(name=f"{name}_bn")(x)


def _paper_trunk(inputs: keras.KerasTensor) -> keras.KerasTensor:
    from keras import layers  # loads TensorFlow (seconds): only when a network is built

    x = inputs
    for b, (filters, kernel, dropout) in enumerate(PAPER_BLOCKS, start=1):
        x = _conv_elu_bn(x, filters, kernel, f"block{b}a")
        x = _conv_elu_bn(x, filters, kernel, f"block{b}b")
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
        x = layers.Dropout(dropout, name=f"block{b}_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(PAPER_DENSE_UNITS, activation="elu", kernel_initializer="he_normal", name="dense")(x)
    x = layers.BatchNormalization(name="dense_bn")(x)
    return layers.Dropout(PAPER_DENSE_DROPOUT, name="dense_dropout")(x)


FAST_STEM_FILTERS = 32
FAST_BLOCKS: tuple[tuple[int, float], ...] = ((64, 0.3), (128, 0.25), (256, 0.2))


def _fast_trunk(inputs: keras.KerasTensor, width: float = 1.0) -> keras.KerasTensor:
    """A fifth of the paper's FLOPs and ~2x its training speed on CPU: one thin 3x3 convolution at full
    resolution, then the paper's three two-convolution blocks with 3x3 kernels at 25, 12 and 6 pixels, dropout
    decreasing with depth as the paper argues, and the paper's Dense(128) neck. Plain convolutions rather than
    separable ones: oneDNN runs them far faster on CPU (measured: benchmarks/train_throughput.py)."""
    from keras import layers  # loads TensorFlow (seconds): only when a network is built

    x = _conv_elu_bn(inputs, round(FAST_STEM_FILTERS * width), 3, "stem")
    x = layers.MaxPooling2D(2, name="stem_pool")(x)  # 50 -> 25
    for b, (filters, dropout) in enumerate(FAST_BLOCKS, start=1):
        x = _conv_elu_bn(x, round(filters * width), 3, f"block{b}a")
        x = _conv_elu_bn(x, round(filters * width), 3, f"block{b}b")
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)  # 25 -> 12 -> 6 -> 3
        x = layers.Dropout(dropout, name=f"block{b}_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(PAPER_DENSE_UNITS, activation="elu", kernel_initializer="he_normal", name="dense")(x)
    x = layers.BatchNormalization(name="dense_bn")(x)
    return layers.Dropout(PAPER_DENSE_DROPOUT, name="dense_dropout")(x)


def _wide_trunk(inputs: keras.KerasTensor) -> keras.KerasTensor:
    """The fast network with 1.5x the filters in every convolution (~2.2x its FLOPs, still under half the
    paper's): the candidate between the two for a 2-core CPU."""
    return _fast_trunk(inputs, width=1.5)


ARCHITECTURES: dict[str, Callable[[keras.KerasTensor], keras.KerasTensor]] = {
    "paper": _paper_trunk,
    "fast": _fast_trunk,
    "wide": _wide_trunk,
}


def build_model(
    architecture: str = "paper",
    tasks: Sequence[str] = ("emotion", "gender", "race", "age"),
    input_size: int = 50,
) -> keras.Model:
    """One shared trunk, one softmax head per task (outputs keyed by task name, heads computed in float32)."""
    import keras  # loads TensorFlow (seconds): only when a network is built
    from keras import layers

    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {sorted(ARCHITECTURES)}")
    if not tasks:
        raise ValueError("a model needs at least one task")
    inputs = keras.Input((input_size, input_size, 1), name="face")
    features = ARCHITECTURES[architecture](inputs)
    outputs = {}
    for name in tasks:
        task = get_task(name)
        logits = layers.Dense(task.num_classes, name=f"{name}_logits")(features)
        outputs[name] = layers.Activation("softmax", dtype="float32", name=name)(logits)
    return keras.Model(inputs, outputs, name=f"mtfer_{architecture}")


def count_flops(model: keras.Model) -> int:
    """Multiply-accumulate count x2 for one face's forward pass (convolutions and dense layers)."""
    from keras import layers  # loads TensorFlow (seconds): only when a network is built

    flops = 0
    for layer in model.layers:
        if isinstance(layer, layers.SeparableConv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            c_in = layer.input.shape[-1]
            flops += 2 * h * w * (kh * kw * c_in + c_in * c_out)
        elif isinstance(layer, layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            flops += 2 * h * w * kh * kw * layer.input.shape[-1] * c_out
        elif isinstance(layer, layers.Dense):
            flops += 2 * layer.input.shape[-1] * layer.units
    return int(flops)
