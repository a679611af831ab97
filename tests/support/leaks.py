"""What a test can count to prove nothing was left behind: sockets, connections, tasks, memory.

All read from ``/proc`` (Linux), so they see the real kernel state rather than
what a library believes it has closed.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Callable


def open_sockets() -> int:
    """Socket file descriptors this process holds (client and server side alike)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:  # closed while we looked
            continue
    return count


def client_ports(port: int) -> frozenset[int]:
    """Local ports of the ESTABLISHED TCP connections from this machine *to* 127.0.0.1:``port``.

    Client-side ends only (the remote port is the server's): once a client
    closes its end, it leaves this set at once, even while the server's
    handler is still stalled on its own end.
    """
    ports = set()
    with open("/proc/self/net/tcp", encoding="ascii") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if state == "01" and int(remote.split(":")[1], 16) == port:
                ports.add(int(local.split(":")[1], 16))
    return frozenset(ports)


def client_connections(port: int) -> int:
    """How many client connections to 127.0.0.1:``port`` are open (see ``client_ports``)."""
    return len(client_ports(port))


def opened_since(port: int, before: frozenset[int]) -> int:
    """Client connections open now that were not open in ``before``.

    Counting these, rather than comparing totals, is immune to an earlier
    test's connection closing meanwhile (collected, or dropped by the server).
    """
    return len(client_ports(port) - before)


def settled_client_ports(port: int, quiet_for: float = 0.2, within: float = 3.0) -> frozenset[int]:
    """``client_ports`` once earlier tests' clients are collected and closed.

    A client left for the garbage collector closes its pooled connection whenever
    the collector runs, which would shift a baseline taken mid-test: collect now,
    then wait until the set has stayed put for ``quiet_for`` seconds.
    """
    gc.collect()
    deadline = time.monotonic() + within
    last, since = client_ports(port), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now = client_ports(port)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_for:
            break
    return last


def settled_client_connections(port: int, quiet_for: float = 0.2, within: float = 3.0) -> int:
    """How many ``settled_client_ports`` there are."""
    return len(settled_client_ports(port, quiet_for, within))


def listening_addresses(port: int) -> list[str]:
    """Local IPv4/IPv6 addresses (hex, as the kernel writes them) listening on ``port``."""
    found = []
    for name in ("tcp", "tcp6"):
        with open(f"/proc/self/net/{name}", encoding="ascii") as table:
            next(table)
            for line in table:
                fields = line.split()
                local, state = fields[1], fields[3]
                address, local_port = local.rsplit(":", 1)
                if state == "0A" and int(local_port, 16) == port:
                    found.append(address)
    return found


def rss_bytes() -> int:
    """Resident memory of this process."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def other_tasks() -> set[asyncio.Task[object]]:
    """Tasks of the running loop other than the current one."""
    current = asyncio.current_task()
    return {t for t in asyncio.all_tasks() if t is not current and not t.done()}


def wait_until(condition: Callable[[], bool], within: float = 5.0, step: float = 0.01) -> bool:
    """Poll ``condition`` until it holds or ``within`` seconds pass; its last value."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            return condition()
        time.sleep(step)
    return True


async def await_until(condition: Callable[[], bool], within: float = 5.0) -> bool:
    """``wait_until`` without blocking the event loop."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            return condition()
        await asyncio.sleep(0.01)
    return True


__all__ = [
    "await_until",
    "client_connections",
    "listening_addresses",
    "open_sockets",
    "other_tasks",
    "rss_bytes",
    "settled_client_connections",
    "wait_until",
]
