"""The operator console: a small web app over the database (`txoutbox console`, see docs/console.md).

It reads only the database (so it sees every relay), repairs through `txoutbox.ops` and `txoutbox.sqs_admin`,
and serves every asset itself: no CDN, no build step.
"""

from txoutbox.console.app import create_app

__all__ = ["create_app"]
