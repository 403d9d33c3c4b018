"""flights."""
