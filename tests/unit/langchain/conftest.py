"""The LangChain unit tests run with network sockets disabled, as langchain-tests expects.

Only this folder: an autouse fixture blocks every socket except Unix ones (the
asyncio event loop needs a socketpair) and restores them after each test, so
the rest of the suite is unaffected.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import pytest_socket


@pytest.fixture(autouse=True)
def _no_network() -> Iterator[None]:
    pytest_socket.disable_socket(allow_unix_socket=True)
    try:
        yield
    finally:
        pytest_socket.enable_socket()
