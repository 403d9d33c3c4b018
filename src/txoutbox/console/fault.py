"""The local stack's SQS fault switch, over its HTTP contract (`GET <fault_url>`, `POST <fault_url>` with
the JSON body `{"mode": "allow|deny|down"}`).

Only `txoutbox up` publishes a fault URL (in `stack.json`); the console never imports the dev stack itself.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from txoutbox.errors import ConfigurationError

MODES = ("allow", "deny", "down")


def _call(request: urllib.request.Request, timeout: float) -> str:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - URL from stack.json
            mode = json.loads(response.read())["mode"]
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        raise ConfigurationError(f"the local SQS fault switch did not answer: {exc}") from None
    return str(mode)


def get_mode(fault_url: str, timeout: float = 3.0) -> str:
    """The mode now in force."""
    return _call(urllib.request.Request(fault_url, method="GET"), timeout)  # noqa: S310


def set_mode(fault_url: str, mode: str, timeout: float = 5.0) -> str:
    """Switch the local SQS to `mode`; return the mode now in force."""
    if mode not in MODES:
        raise ConfigurationError(f"fault mode must be one of {', '.join(MODES)}, got {mode!r}")
    # A JSON body, never a query string: the switch refuses anything else, so no cross-site form can flip it.
    request = urllib.request.Request(  # noqa: S310
        fault_url,
        method="POST",
        data=json.dumps({"mode": mode}).encode(),
        headers={"Content-Type": "application/json"},
    )
    return _call(request, timeout)
