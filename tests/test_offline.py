"""The test run has no network (tests/offline/sitecustomize.py, .ci/offline): nothing in
the suite can pass by downloading a model, a data set or a browser resource."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

TRY = """
import socket
for what in (lambda: socket.getaddrinfo("pypi.org", 443),
             lambda: socket.create_connection(("192.0.2.1", 80), timeout=2)):
    try:
        what()
        print("open")
    except OSError as exc:
        print("refused", exc)
"""


def test_this_process_cannot_reach_the_network():
    with pytest.raises(OSError):
        socket.getaddrinfo("pypi.org", 443)
    with pytest.raises(OSError):
        socket.create_connection(("192.0.2.1", 80), timeout=2)  # TEST-NET-1: never routed


def test_processes_the_tests_start_cannot_reach_it_either():
    out = subprocess.run([sys.executable, "-c", TRY], capture_output=True, text=True, timeout=60)
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("refused") for line in lines), out.stdout + out.stderr


def test_loopback_stays_open():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    with socket.create_connection(server.getsockname(), timeout=2):
        pass
    server.close()
