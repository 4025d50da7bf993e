"""Training: the settings and their one preset table, the data pipeline, Keras callbacks, the trainer, and
finalize (everything that rewrites a bundle after training: calibration, thresholds, evaluations); plus
pseudo-labels, learned task weights and the time estimate of a run."""
