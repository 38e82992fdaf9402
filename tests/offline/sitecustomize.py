"""Cut the network for the test run: every outward connection or name lookup made by a
Python process raises an error at once (loopback, Unix sockets and this machine's own
name stay open).

tests/conftest.py installs this in the test process and puts this folder first on
PYTHONPATH, so that every Python process the tests start (the CLI, Beam's workers)
imports it as ``sitecustomize`` and is cut off too. ``make test`` also runs the suite in
a network namespace that holds only loopback, where the machine allows one
(``.ci/offline``); this guard is what holds where it does not.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys

_OWN = {"", "localhost", "localhost.localdomain", "ip6-localhost", "0.0.0.0", "::", socket.gethostname()}


def _local(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host is None or host in _OWN:
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _refuse(event: str, args) -> None:
    if event in ("socket.connect", "socket.sendto"):
        sock, address = args[0], args[1]
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
            raise OSError(f"the test run has no network: refused a connection to {address[0]}")
    elif event == "socket.getaddrinfo":
        if not _local(args[0]):
            raise OSError(f"the test run has no network: refused looking up {args[0]}")


def install() -> None:
    if not getattr(sys, "_poisonscan_offline", False):
        sys.addaudithook(_refuse)
        sys._poisonscan_offline = True


if os.environ.get("POISONSCAN_TEST_OFFLINE") == "1":
    install()
