"""blocks layer."""
