"""Learned task weights: homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018).

The paper fixes the weights of the four losses by hand (emotion 2, age 4, race 1.5, gender 0.1) and names learning
them as future work. With ``TrainConfig(loss_weights_mode="learned")`` (``mtfer train --loss-weights learned``)
every task t gets one trainable log-variance s_t (float32, also under the bfloat16 policy, initialised to 0, i.e.
weight 1), trained by the same optimizer as the network, and the total loss is::

    total = sum over tasks with a label in the batch of  exp(-s_t) * L_t + s_t

the form Kendall et al. give for classification heads with s_t = log(sigma_t^2) and the 1/2 factors dropped.
For a fixed L_t the minimum is at exp(-s_t) = 1 / L_t: a task whose loss stays high (noisy or hard labels) ends
with a small weight, and the + s_t term keeps the weights from growing without bound.

L_t is the masked mean of the head's per-sample loss over the labelled samples of the batch:
sum(w_i * l_i) / sum(w_i), with w the sample weight that make_dataset gives (label mask, times any class weight
or mixup share). Samples without the task's label (label -1, weight 0) add nothing to L_t, and a task without any
label in a batch adds neither L_t nor s_t there (otherwise s_t alone would push its weight up in every batch of
the other data set). Keras's fixed-weight total divides by the batch size instead; the per-head ``<task>_loss``
columns of history.csv keep that definition, so they stay comparable across runs. ``loss`` is the weighted total
above, which can be negative (s_t < 0 once L_t < 1).

The weights exp(-s_t) are logged after every epoch into history.csv (``weight_<task>``) and stored in the bundle's
metadata (``loss_weights_learned``). The log-variances live in the training model (a registered Functional subclass,
so the run's checkpoint saves, reloads with safe_mode and resumes them); the saved inference bundle is the plain
network without them (:func:`inference_model`), which the Predictor loads like any other bundle."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
from keras import ops

from mtfer.core.tasks import TASK_NAMES

LEARNED = "learned"
WEIGHT_PREFIX = "weight_"  # history.csv columns weight_emotion, weight_gender, ...
LOG_VARIANCE_NAME = "task_log_variance"
METADATA_KEY = "loss_weights_learned"


def uncertainty_total(losses: Any, present: Any, log_variances: Any) -> Any:
    """sum_t present_t * (exp(-s_t) * L_t + s_t) for per-task losses L (T,), presence flags (T,) and s (T,)."""
    losses = ops.cast(losses, "float32")
    log_variances = ops.cast(log_variances, "float32")
    terms = ops.exp(-log_variances) * losses + log_variances
    return ops.sum(ops.where(ops.cast(present, "bool"), terms, ops.zeros_like(terms)))


def _per_sample(loss: Any, y_true: Any, y_pred: Any) -> Any:
    fn = keras.losses.get(loss)
    if isinstance(fn, keras.losses.Loss):
        return fn.call(y_true, y_pred)  # unreduced: one value per sample
    return fn(y_true, y_pred)


@keras.saving.register_keras_serializable(package="mtfer")
class LearnedLossWeightsModel(keras.Model):
    """A Functional model (the same layers, inputs and outputs as the network) that learns its task weights.

    Its constructor has Functional's signature, so it saves and loads like the network; the variable
    ``task_log_variance`` (one entry per task, in TASK_NAMES order) is saved with the weights."""

    def __init__(self, inputs: Any, outputs: Any, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(inputs, outputs, name=name, **kwargs)
        heads = self.output if isinstance(self.output, Mapping) else {}
        self.task_names = [t for t in TASK_NAMES if t in heads]
        if len(self.task_names) < 2:
            raise ValueError(
                f"learned loss weights need a model with at least two task heads, got {self.task_names or 'none'}"
            )
        self.log_variances = self.add_weight(
            shape=(len(self.task_names),), initializer="zeros", dtype="float32", name=LOG_VARIANCE_NAME
        )

    def task_losses(self, y: Mapping[str, Any], y_pred: Mapping[str, Any], sample_weight: Any = None):
        """(L, present): each task's masked mean loss over its labelled samples (0 without any) and whether the
        batch has any label of it, as float32 (T,) tensors in ``task_names`` order. Uses the compiled losses."""
        if not isinstance(self.loss, Mapping):
            raise ValueError("compile the model with one loss per task (a dict keyed by task) before training")
        losses, present = [], []
        for t in self.task_names:
            per_sample = ops.cast(_per_sample(self.loss[t], y[t], y_pred[t]), "float32")
            weights = sample_weight.get(t) if isinstance(sample_weight, Mapping) else sample_weight
            w = ops.ones_like(per_sample) if weights is None else ops.reshape(ops.cast(weights, "float32"), [-1])
            total_weight = ops.sum(w)
            losses.append(ops.sum(w * per_sample) / ops.maximum(total_weight, 1e-12))
            present.append(total_weight > 0)
        return ops.stack(losses), ops.stack(present)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        from keras.src.losses.loss import scale_loss_for_distribution

        del x, training
        if self._compile_loss is not None:
            self._compile_loss(y, y_pred, sample_weight)  # records each head's loss (<task>_loss) as usual
        losses, present = self.task_losses(y, y_pred, sample_weight)
        total = scale_loss_for_distribution(uncertainty_total(losses, present, self.log_variances))
        for extra in self.losses:  # regularisers, add_loss
            total = total + ops.cast(self._aggregate_additional_loss(extra), "float32")
        return total

    def weight_logs(self) -> dict[str, Any]:
        """{"weight_<task>": exp(-s_t)}."""
        weights = ops.exp(-self.log_variances)
        return {f"{WEIGHT_PREFIX}{t}": weights[i] for i, t in enumerate(self.task_names)}

    def train_step(self, data):
        logs = super().train_step(data)  # the backend's step: gradients reach the log-variances too
        return {**logs, **self.weight_logs()}


def with_learned_weights(model: keras.Model) -> LearnedLossWeightsModel:
    """The network `model` (its layers shared, not copied) as a model that learns its task weights."""
    if isinstance(model, LearnedLossWeightsModel):
        return model
    return LearnedLossWeightsModel(model.input, model.output, name=model.name)


def for_config(model: keras.Model, config: Any) -> keras.Model:
    """`model` as the trainer should train it: wrapped by :func:`with_learned_weights` when
    ``config.loss_weights_mode`` is "learned", unchanged otherwise."""
    mode = getattr(config, "loss_weights_mode", "fixed")
    return with_learned_weights(model) if mode == LEARNED else model


def learned_weights(model: Any) -> dict[str, float] | None:
    """The weights exp(-s_t) the model has learned, by task; None for a model without learned weights."""
    if not isinstance(model, LearnedLossWeightsModel):
        return None
    values = ops.convert_to_numpy(ops.exp(-model.log_variances)).tolist()
    return {t: float(v) for t, v in zip(model.task_names, values, strict=True)}


def inference_model(model: Any, metadata: dict | None = None) -> Any:
    """The network to evaluate and save in a bundle: without the log-variances (a plain Functional model over the
    same layers, so the bundle needs nothing from this module to load). With learned weights, `metadata` gets
    ``loss_weights_learned`` {task: exp(-s_t)}. Any other model is returned as it is."""
    weights = learned_weights(model)
    if weights is None:
        return model
    if metadata is not None:
        metadata[METADATA_KEY] = weights
    return keras.Model(model.input, model.output, name=model.name)
