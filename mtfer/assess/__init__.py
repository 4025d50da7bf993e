"""mtfer.assess."""
