"""mtfer.train."""
