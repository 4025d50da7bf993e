"""Training on several machines: TensorFlow's MultiWorkerMirroredStrategy under Keras 3's `fit`.

Each machine runs the same `mtfer train ... --strategy multiworker` with `TF_CONFIG` naming every worker and its own
index; the workers take turns over the data (each reads every N-th batch) and average their gradients at every
step, so they end with the same weights, and each writes its own run folder (the first worker's is the one to use).

Keras 3 (3.15, with TensorFlow 2.21) fails in `fit` under this strategy in two places, both in how it reduces
values across workers, never in the training itself; :func:`make_strategy` corrects both before training starts:

- before the first step it builds the metrics from one batch by asking the strategy for the mean of the whole
  distributed batch (faces, labels and weights at once), which a collective reduce cannot take: here the first
  local replica's batch is used instead (the build only needs its shapes);
- after every step it averages each logged value across workers along axis 0, which a scalar (a loss, an
  accuracy) does not have: here scalars are averaged as they are.
"""

from __future__ import annotations

from typing import Any

_patched = False


def make_strategy() -> Any:
    """A MultiWorkerMirroredStrategy from `TF_CONFIG` (one worker when it is not set), with Keras corrected."""
    import tensorflow as tf

    _correct_keras()
    return tf.distribute.MultiWorkerMirroredStrategy()


def _correct_keras() -> None:
    global _patched
    if _patched:
        return
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    reduce_per_replica = trainer.reduce_per_replica

    def reduced(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction not in ("auto", "mean") or not trainer._collective_all_reduce_multi_worker(strategy):
            return reduce_per_replica(values, strategy, reduction)

        def mean(value: Any) -> Any:
            if not trainer._is_per_replica_instance(value):
                return value
            return strategy.reduce("MEAN", value, axis=None if value.values[0].shape.rank == 0 else 0)

        return tf.nest.map_structure(mean, values)

    def symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
        if self._distribute_strategy is None:
            return
        local = self.distribute_strategy.experimental_local_results
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: local(v)[0] if isinstance(v, tf.distribute.DistributedValues) else v, next(it)
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    trainer.reduce_per_replica = reduced
    trainer.TensorFlowTrainer._maybe_symbolic_build = symbolic_build
    _patched = True
