"""Use cases. Pure Python: they report through a Reporter and never print."""
