"""mtfer.core."""
