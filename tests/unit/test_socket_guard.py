"""The network guard of ``tests/unit/conftest.py`` really blocks, and says which test tried."""

from __future__ import annotations

import asyncio
import http.client
import socket

import httpx
import pytest

NOWHERE = ("127.0.0.1", 9)  # the discard port: nothing would answer anyway
BLOCKED = "unit tests run without network"  # the guard's SocketBlockedError says so


def blocked(error: BaseException) -> bool:
    """The guard's error, or an exception group holding it (Python 3.10 has no such name)."""
    grouped: tuple[BaseException, ...] = getattr(error, "exceptions", ())
    if grouped:
        return any(blocked(inner) for inner in grouped)
    return type(error).__name__ == "SocketBlockedError" and BLOCKED in str(error)


def test_connect_and_connect_ex_are_refused_naming_the_test() -> None:
    with socket.socket() as sock:
        with pytest.raises(RuntimeError, match=r"test_socket_guard\.py::test_connect_and") as info:
            sock.connect(NOWHERE)
        assert type(info.value).__name__ == "SocketBlockedError"
        with pytest.raises(RuntimeError, match="127.0.0.1.*" + BLOCKED):
            sock.connect_ex(NOWHERE)


def test_create_connection_and_http_clients_are_refused() -> None:
    with pytest.raises(RuntimeError, match=BLOCKED):
        socket.create_connection(NOWHERE, timeout=1)
    with pytest.raises(RuntimeError, match=BLOCKED):
        http.client.HTTPConnection(*NOWHERE, timeout=1).request("GET", "/")
    with pytest.raises(RuntimeError, match=BLOCKED):
        httpx.get("http://127.0.0.1:9/", timeout=1)


async def test_asyncio_connections_are_refused_and_the_loop_still_runs() -> None:
    with pytest.raises(RuntimeError, match=BLOCKED):
        await asyncio.open_connection(*NOWHERE)
    with pytest.raises(BaseException) as info:  # anyio connects in a task group
        async with httpx.AsyncClient() as client:
            await client.get("http://127.0.0.1:9/", timeout=1)
    assert blocked(info.value), info.value
    left, right = socket.socketpair()  # local IPC stays open
    with left, right:
        left.sendall(b"ok")
        assert right.recv(2) == b"ok"
