"""One place that takes secrets out of text meant for people: error messages, logs, CLI output."""

from __future__ import annotations

import re

# postgresql://user:SECRET@host (also with a malformed, unencoded password): keep the user, hide the rest
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/?#@]*:)\S*@")
# password=SECRET in a key=value conninfo or a URL query, quoted or not
_KEY_PASSWORD = re.compile(r"""(?i)\b(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&'"]+)""")


def redact(text: str) -> str:
    """`text` with the password of every connection URL or `password=` setting replaced by `***`."""
    return _KEY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))
