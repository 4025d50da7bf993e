"""mtfer.app."""
