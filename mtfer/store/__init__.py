"""Where things live on disk and in the environment: run folders and their progress, background training jobs,
data roots and model choices, a model's training lineage."""
