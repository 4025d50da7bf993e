"""mtfer.media."""
