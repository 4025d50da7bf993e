"""Why the network said what it said: a heatmap over the aligned face, for one head and one class.

Three methods, each returning an (S,S) float32 map in [0, 1] on the same pixels as the aligned face the network
saw (``FacePrediction.aligned``), 1 where the evidence for the class is strongest:

* ``occlusion`` (default): the drop of the class's probability when an 8x8 patch (stride 4) is filled with the
  face's mean, averaged over the patches that cover each pixel. 144 network passes per face (one batch), no
  gradients.
* ``layercam`` and ``gradcam``: gradient maps on the last convolution. The model has several outputs, so a second
  model maps the face to [that convolution's activations A, the head's logits] (the input of the head's softmax)
  and ``tf.GradientTape`` gives the class logit's gradient G. Grad-CAM (Selvaraju et al. 2017) weights each
  channel by its mean gradient, ReLU(sum_k mean(G_k) A_k); LayerCAM (Jiang et al. 2021) weights each cell by its
  own positive gradient, ReLU(sum_k ReLU(G_k) * A_k). One forward and one backward pass. The map is resized to
  the pixels that convolution sees (its stride times its size: 6x6 cells of 8 pixels for the fast architecture;
  the last two pixel rows and columns, dropped by the pooling, get the edge value). A bfloat16-trained model is
  explained through a float32 copy (mtfer.core.convert.float32_model).

Why occlusion is the default: covering the hottest 12x12 patch of a map (filled with the face's mean) should lower
the class's probability more than covering a random 12x12 patch. On 21 FER2013 test faces (tests/test_explain.py),
the top emotion's probability drops on average by:

    shipped model                              occlusion  LayerCAM  Grad-CAM  random patch
    recipe multi-task (bfloat16, tta_flip)        0.190     0.094     0.080     0.039
    earlier holdout multi-task (float32)          0.177     0.072     0.035     0.045

Occlusion is 4-5x a random patch on both; the gradient maps depend on the model, and classic Grad-CAM was no better
than chance on the earlier one: the last convolution feeds Flatten + Dense, whose weights differ at every cell, so
a channel's mean gradient (Grad-CAM's weight) can lose where the class is read. LayerCAM keeps it per cell and is
the fast alternative (one forward and one backward pass instead of 144 forward passes).

When the bundle averages each face with its mirror image (input.tta_flip), so do the maps: the mirror's map is
flipped back and the two are averaged, as the probabilities are.

For the app: ``explain_face(predictor, face.aligned)`` then ``overlay(face.aligned, explanation.heatmap, size=200)``
(an RGB uint8 image).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from mtfer.core import backends, bundles, faces
from mtfer.core.backends import predict_arrays
from mtfer.core.convert import float32_model
from mtfer.core.tasks import display_name

METHODS = ("occlusion", "layercam", "gradcam")
DEFAULT_METHOD = "occlusion"
GRADIENT_METHODS = ("layercam", "gradcam")
OCCLUSION_PATCH = 8
OCCLUSION_STRIDE = 4
_CONV_TYPES = ("Conv2D", "SeparableConv2D", "DepthwiseConv2D")

_GRADCAM: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {task: (fn, layer name)}
_CACHE_LOCK = threading.Lock()


@dataclass
class Explanation:
    """One face's heatmap for one class of one head."""

    heatmap: np.ndarray  # (S,S) float32 in [0, 1], aligned with the face
    method: str
    task: str
    class_name: str
    class_index: int
    probability: float  # the class's probability for this face (as the Predictor reports it)
    layer: str | None = None  # the convolution a gradient method used

    def peak(self) -> tuple[int, int]:
        """(x, y) of the map's maximum, in face pixels."""
        y, x = np.unravel_index(int(np.argmax(self.heatmap)), self.heatmap.shape)
        return int(x), int(y)

    def to_dict(self, decimals: int = 3) -> dict:
        return {
            "method": self.method,
            "task": self.task,
            "class": self.class_name,
            "probability": round(float(self.probability), 6),
            **({"layer": self.layer} if self.layer else {}),
            "size": int(self.heatmap.shape[0]),
            "map": np.round(self.heatmap.astype(np.float64), decimals).tolist(),
        }

    def summary(self) -> str:
        x, y = self.peak()
        size = self.heatmap.shape[0]
        return f"{self.method} for {self.task} {self.class_name}: strongest at x={x}, y={y} of the {size}x{size} face"


def default_task(tasks: Sequence[str]) -> str:
    """The head explained when none is named: emotion when the model has it, else its first head."""
    return "emotion" if "emotion" in tasks else tasks[0]


def last_conv_layer(model: Any) -> str:
    """The name of the model's last convolution (in layer order). ValueError when it has none."""
    convs = [layer.name for layer in model.layers if type(layer).__name__ in _CONV_TYPES]
    if not convs:
        raise ValueError("the model has no convolution for a gradient map; use method='occlusion'")
    return convs[-1]


def _unpack(source: Any) -> tuple[Any, bool, dict[str, list[str]]]:
    """(keras model, mirror-averaging, {task: classes}) from a Predictor, a Bundle or a bare Keras model."""

    if hasattr(source, "bundle") and hasattr(source, "flip"):  # a Predictor
        return source.bundle.model, bool(source.flip), dict(source.classes)
    if isinstance(source, bundles.Bundle):
        flip = bool(source.metadata["input"].get("tta_flip", False))
        return source.model, flip, {t: list(c) for t, c in source.metadata["tasks"].items()}
    return source, False, {t: [str(i) for i in range(int(source.output[t].shape[-1]))] for t in source.output}


def _temperatures(source: Any) -> dict[str, float]:
    """The calibration the Predictor applies to the probabilities it reports (mtfer.assess.calibration): a Predictor's or a
    Bundle's temperatures, {} for a bare Keras model or a bundle never calibrated."""

    if hasattr(source, "bundle") and hasattr(source, "temperatures"):  # a Predictor
        return dict(source.temperatures)
    if isinstance(source, bundles.Bundle):
        return backends.temperatures(source.metadata)
    return {}


def _gradcam_fn(model: Any, task: str):
    """A traced (x, class indices) -> (conv activations, gradients of the class logits) for `task`."""
    with _CACHE_LOCK:
        per_task = _GRADCAM.setdefault(model, {})
        if task in per_task:
            return per_task[task]
        import keras
        import tensorflow as tf

        f32 = float32_model(model)
        layer = last_conv_layer(f32)
        head = f32.get_layer(task)
        # The head's logits: the input of its softmax layer when it has one, else log-probabilities.
        is_softmax = type(head).__name__ == "Activation" and getattr(head.activation, "__name__", "") == "softmax"
        score = head.input if is_softmax else f32.output[task]
        grad_model = keras.Model(f32.inputs, [f32.get_layer(layer).output, score])
        size = int(f32.input.shape[1])

        @tf.function(
            input_signature=[tf.TensorSpec([None, size, size, 1], tf.float32), tf.TensorSpec([None], tf.int32)]
        )
        def fn(x, index):
            with tf.GradientTape() as tape:
                conv, out = grad_model(x, training=False)
                conv = tf.cast(conv, tf.float32)
                out = tf.cast(out, tf.float32)
                if not is_softmax:
                    out = tf.math.log(tf.maximum(out, 1e-12))
                target = tf.reduce_sum(tf.gather(out, index, batch_dims=1))
            return conv, tape.gradient(target, conv)

        per_task[task] = (fn, layer)
        return per_task[task]


def _to_face_pixels(cams: np.ndarray, size: int) -> np.ndarray:
    """(N,h,w) maps of a convolution -> (N,size,size): each cell spread over the `stride` pixels it stands for
    (stride = size // h: pooling floors, so the last pixels are not seen and get the edge value)."""
    n, h, w = cams.shape
    sy, sx = max(1, size // h), max(1, size // w)
    out = np.empty((n, size, size), np.float32)
    for i, cam in enumerate(cams):
        up = cv2.resize(cam.astype(np.float32), (w * sx, h * sy), interpolation=cv2.INTER_LINEAR)
        up = up[:size, :size]
        out[i] = np.pad(up, ((0, size - up.shape[0]), (0, size - up.shape[1])), mode="edge")
    return out


def _normalise(maps: np.ndarray) -> np.ndarray:
    """Each map divided by its maximum (all zeros when it has no positive value), clipped to [0, 1]."""
    maps = np.maximum(np.nan_to_num(maps.astype(np.float32)), 0)
    peak = maps.reshape(len(maps), -1).max(axis=1) if len(maps) else np.zeros(0, np.float32)
    scale = np.where(peak > 0, peak, 1.0)[:, None, None]
    return np.clip(maps / scale, 0.0, 1.0).astype(np.float32)


def gradient_maps(
    model: Any, aligned: np.ndarray, task: str, indices: Sequence[int], flip: bool = False, method: str = "layercam"
) -> np.ndarray:
    """Raw (unnormalised, >= 0) LayerCAM or Grad-CAM maps (N,S,S) of class `indices[i]` of `task` for uint8 faces
    (N,S,S), on the last convolution."""
    if method not in GRADIENT_METHODS:
        raise ValueError(f"unknown gradient method {method!r}: use one of {', '.join(GRADIENT_METHODS)}")
    fn, _ = _gradcam_fn(model, task)
    size = int(model.input.shape[1])
    x = faces.to_network_input(np.asarray(aligned), size=size)
    index = np.asarray(indices, np.int32)

    def cams(batch: np.ndarray) -> np.ndarray:
        conv, grads = fn(batch, index)
        conv, grads = np.asarray(conv, np.float32), np.asarray(grads, np.float32)
        # Grad-CAM: one weight per channel; LayerCAM: one per channel and cell.
        weights = grads.mean(axis=(1, 2), keepdims=True) if method == "gradcam" else np.maximum(grads, 0)
        weighted = conv * weights
        return _to_face_pixels(np.maximum(weighted.sum(-1), 0), size)

    maps = cams(x)
    if flip:
        maps = (maps + cams(np.ascontiguousarray(x[:, :, ::-1]))[:, :, ::-1]) / 2
    return maps


def occlusion_maps(
    model: Any,
    aligned: np.ndarray,
    task: str,
    indices: Sequence[int],
    flip: bool = False,
    patch: int = OCCLUSION_PATCH,
    stride: int = OCCLUSION_STRIDE,
) -> np.ndarray:
    """Raw (>= 0) occlusion maps (N,S,S): per pixel, the mean drop of the class's probability over the patches
    (filled with the face's mean) that cover it."""

    aligned = np.asarray(aligned)
    n, size = len(aligned), aligned.shape[1]
    if not 1 <= patch <= size or stride < 1:
        raise ValueError(f"occlusion needs 1 <= patch <= {size} and stride >= 1, got patch {patch}, stride {stride}")
    starts = sorted({*range(0, size - patch + 1, stride), size - patch})
    boxes = [(y, x) for y in starts for x in starts]
    base = predict_arrays(model, aligned, flip=flip)[task][np.arange(n), indices]
    maps = np.zeros((n, size, size), np.float32)
    for i in range(n):
        occluded = np.repeat(aligned[i][None], len(boxes), axis=0)
        fill = np.uint8(round(float(aligned[i].mean())))
        for k, (y, x) in enumerate(boxes):
            occluded[k, y : y + patch, x : x + patch] = fill
        probs = predict_arrays(model, occluded, flip=flip)[task][:, indices[i]]
        total, count = np.zeros((size, size), np.float32), np.zeros((size, size), np.float32)
        for (y, x), p in zip(boxes, probs, strict=True):
            total[y : y + patch, x : x + patch] += base[i] - p
            count[y : y + patch, x : x + patch] += 1
        maps[i] = total / np.maximum(count, 1)
    return np.maximum(maps, 0)


def explain_faces(
    source: Any,
    aligned: np.ndarray | Sequence[np.ndarray],
    task: str | None = None,
    class_name: str | None = None,
    method: str = DEFAULT_METHOD,
) -> list[Explanation]:
    """Heatmaps for aligned uint8 faces (N,S,S), as the Predictor frames them (FacePrediction.aligned).

    source: a Predictor (or a Bundle, or a Keras model); task: the head (default: emotion, else the first);
    class_name: the class explained (default: each face's top class of that head); method: 'occlusion',
    'layercam' or 'gradcam' (see the module docstring). ValueError on an unknown task, class or method."""

    model, flip, classes = _unpack(source)
    task = task or default_task(list(classes))
    if task not in classes:
        raise ValueError(f"unknown task {task!r}: this model has {', '.join(classes)}")
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}: use one of {', '.join(METHODS)}")
    if class_name is not None and class_name not in classes[task]:
        raise ValueError(f"unknown {task} class {class_name!r}: use one of {', '.join(classes[task])}")
    batch = np.asarray(aligned) if len(aligned) else np.zeros((0, 1, 1), np.uint8)
    if len(batch) == 0:
        return []
    if batch.ndim == 2:
        batch = batch[None]
    faces.to_network_input(batch, size=int(model.input.shape[1]))  # ValueError on a wrong shape or dtype
    probs = predict_arrays(model, batch, flip=flip, temperatures=_temperatures(source))[task]  # as the Predictor's
    indices = (
        [classes[task].index(class_name)] * len(batch) if class_name is not None else probs.argmax(axis=1).tolist()
    )
    if method in GRADIENT_METHODS:
        maps, layer = gradient_maps(model, batch, task, indices, flip, method), _gradcam_fn(model, task)[1]
    else:
        maps, layer = occlusion_maps(model, batch, task, indices, flip), None
    maps = _normalise(maps)
    return [
        Explanation(maps[i], method, task, classes[task][c], int(c), float(probs[i, c]), layer)
        for i, c in enumerate(indices)
    ]


def explain_face(
    source: Any,
    aligned: np.ndarray,
    task: str | None = None,
    class_name: str | None = None,
    method: str = DEFAULT_METHOD,
) -> Explanation:
    """One aligned uint8 face (S,S): see explain_faces."""
    face = np.asarray(aligned)
    if face.ndim != 2:
        raise ValueError(f"expected one aligned gray face (S,S), got shape {face.shape}")
    return explain_faces(source, face[None], task, class_name, method)[0]


def explain_predictions(
    predictor: Any, predictions: Sequence[Any], task: str | None = None, method: str = DEFAULT_METHOD
) -> list[Explanation]:
    """The top class of `task` explained for each FacePrediction of one photo (mtfer predict --explain)."""
    if not predictions:
        return []
    return explain_faces(predictor, np.stack([p.aligned for p in predictions]), task, None, method)


def _face_and_map(face: np.ndarray, heatmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A gray uint8 face (S,S) and its float32 heatmap of the same size, or ValueError saying what is wrong."""
    face, heatmap = np.asarray(face), np.asarray(heatmap, np.float32)
    if face.ndim == 3 and face.shape[-1] == 1:
        face = face[..., 0]
    if face.ndim != 2 or face.dtype != np.uint8:
        raise ValueError(f"expected a gray uint8 face (S,S), got {face.dtype} {face.shape}")
    if heatmap.shape != face.shape:
        raise ValueError(f"the heatmap is {heatmap.shape}, the face {face.shape}: they must be the same size")
    return face, heatmap


def overlay(
    face: np.ndarray,
    heatmap: np.ndarray,
    alpha: float = 0.45,
    size: int | None = None,
    colormap: int = cv2.COLORMAP_JET,
) -> np.ndarray:
    """The gray face with the heatmap coloured over it (cv2.applyColorMap; red = strongest): an RGB uint8 image,
    the face's size, or `size` x `size` pixels (both enlarged smoothly before blending) for display."""
    face, heatmap = _face_and_map(face, heatmap)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if size is not None:
        if size < 1:
            raise ValueError(f"size must be a positive number of pixels, got {size}")
        face = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
        heatmap = cv2.resize(heatmap, (size, size), interpolation=cv2.INTER_CUBIC)
    heat = cv2.applyColorMap(np.uint8(np.clip(heatmap, 0, 1) * 255 + 0.5), colormap)
    gray = cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
    blended = cv2.addWeighted(heat, alpha, gray, 1.0 - alpha, 0.0)
    return cv2.cvtColor(blended, cv2.COLOR_BGR2RGB)


def highlight(
    face: np.ndarray,
    heatmap: np.ndarray,
    size: int = 256,
    strength: float = 0.75,
    smooth: float = 1.5,
    colormap: int = cv2.COLORMAP_JET,
) -> np.ndarray:
    """For people (the Predict page): the gray face enlarged to `size` x `size`, coloured only where the map is
    high. Unlike :func:`overlay`, the blend follows the map (alpha = strength x map), so the face stays plain gray
    where the evidence is weak and turns yellow to red where it is strong; a light Gaussian blur (`smooth`, in face
    pixels; 0 = none) hides the occlusion grid. An RGB uint8 image."""
    face, heatmap = _face_and_map(face, heatmap)
    if size < 1 or not 0.0 <= strength <= 1.0 or smooth < 0:
        raise ValueError(f"need size >= 1, 0 <= strength <= 1 and smooth >= 0, got {size}, {strength}, {smooth}")
    heat = np.clip(np.nan_to_num(heatmap), 0, 1)
    if smooth > 0:
        heat = cv2.GaussianBlur(heat, (0, 0), smooth, borderType=cv2.BORDER_REPLICATE)
        heat = heat / heat.max() if heat.max() > 0 else heat
    face = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
    heat = np.clip(cv2.resize(heat, (size, size), interpolation=cv2.INTER_CUBIC), 0, 1)
    colour = cv2.cvtColor(cv2.applyColorMap(np.uint8(heat * 255 + 0.5), colormap), cv2.COLOR_BGR2RGB)
    alpha = (strength * heat)[..., None]
    gray = cv2.cvtColor(face, cv2.COLOR_GRAY2RGB).astype(np.float32)
    return np.uint8(np.clip(gray * (1 - alpha) + colour.astype(np.float32) * alpha + 0.5, 0, 255))


def why_caption(explanation: Explanation) -> str:
    """One plain sentence for the overlay (:func:`overlay`): what its warm colours mean, for the class explained."""

    answer = display_name(explanation.task, explanation.class_name).lower()
    how = ": covering them with grey lowers its confidence the most" if explanation.method == "occlusion" else ""
    return (
        f"Red and yellow mark the parts of the face that most pushed the model towards “{answer}”{how}; "
        "the rest mattered little."
    )
