"""Batch labelling past one process: Ray Data (the optional extra `scale`)."""
