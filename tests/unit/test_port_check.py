"""`txoutbox.cli.common.check_port`, the one port check of every command that starts a server."""

from __future__ import annotations

import socket

import pytest

from txoutbox.cli.common import check_port, port_is_free
from txoutbox.errors import ConfigurationError


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_a_port_in_use_is_one_sentence_and_a_free_one_passes(family: socket.AddressFamily, host: str) -> None:
    with socket.socket(family, socket.SOCK_STREAM) as taken:
        taken.bind((host, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"port {port} on {host} is already in use"):
            check_port(host, port, "the console")
    assert port_is_free(port, host)
    check_port(host, port, "the console")
