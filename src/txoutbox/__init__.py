"""txoutbox."""
