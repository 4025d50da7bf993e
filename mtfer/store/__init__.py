"""mtfer.store."""
