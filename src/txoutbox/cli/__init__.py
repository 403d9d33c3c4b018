"""The `txoutbox` command line."""
