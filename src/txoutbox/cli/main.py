"""Entry point of the `txoutbox` command."""


def main() -> None:
    raise SystemExit("not yet")
