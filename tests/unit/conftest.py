"""Unit tests never touch the network: every connection attempt fails, naming the test.

One autouse guard for all of ``tests/unit`` (langchain-tests expects its unit suite to
run this way too). It replaces ``socket.socket.connect`` / ``connect_ex`` and
``socket.create_connection``, which every client goes through (``http.client``,
``httpx``, ``ollama``, ``openai``, asyncio's ``open_connection`` via ``sock_connect``).
Unix sockets stay open: the asyncio event loop wakes itself through a socket pair.
The error is a ``RuntimeError``, not an ``OSError``, so no code under test mistakes it
for an unreachable server and carries on. Tests that need a server belong in
``tests/integration``.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest


class SocketBlockedError(RuntimeError):
    """A unit test tried to open a network connection."""


@pytest.fixture(autouse=True)
def _no_network(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    test = request.node.nodeid
    connect = socket.socket.connect
    connect_ex = socket.socket.connect_ex

    def refuse(address: object) -> SocketBlockedError:
        return SocketBlockedError(
            f"{test} tried to connect to {address!r}: unit tests run without network "
            "(tests/unit/conftest.py); a test that needs a server belongs in tests/integration"
        )

    def guarded_connect(sock: socket.socket, address: Any) -> None:
        if sock.family != socket.AF_UNIX:
            raise refuse(address)
        connect(sock, address)

    def guarded_connect_ex(sock: socket.socket, address: Any) -> int:
        if sock.family != socket.AF_UNIX:
            raise refuse(address)
        return connect_ex(sock, address)

    def guarded_create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        raise refuse(address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "create_connection", guarded_create_connection)
