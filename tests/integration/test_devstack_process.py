"""devstack.process.Child: a child dies with the process that started it, even one SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.helpers import poll
from txoutbox.processes import process_alive

PARENT = """
import sys, time
from devstack.process import Child
child = Child([sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def test_children_die_with_a_sigkilled_parent() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert process_alive(child)
        parent.kill()  # SIGKILL: the parent cannot stop anything itself
        parent.wait(10)
        assert poll(lambda: not process_alive(child), 10)
    finally:
        if process_alive(child):
            os.kill(child, signal.SIGKILL)
