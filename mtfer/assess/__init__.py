"""How good a model is and how far to trust it: evaluation metrics, calibration, "not sure" thresholds, the
"why" heatmaps, and the paper's reported figures to compare against."""
