"""llama-cpp-python's own OpenAI-compatible server, run as a subprocess for the tests.

A real third-party server next to the project's test server
(``ollama_server``): ``python -m llama_cpp.server`` from the
``llama-cpp-python[server]`` extra, on 127.0.0.1 with a free port, serving the
embedded SmolLM2-135M-Instruct GGUF under one alias. The project's test server
imitates vLLM and OpenAI; this one is what a user of llama-cpp-python really
runs, so where the two disagree the project's server is the one to change.

What it does differently (checked in ``tests/integration/test_llama_cpp_server.py``):

* a stream carries no usage chunk (``stream_options.include_usage`` is ignored);
* a streamed request whose prompt exceeds the context gets HTTP 200 and an
  empty body (the same request without ``stream`` gets 400
  ``context_length_exceeded``);
* it serves its one model under any name (``model`` is echoed back).

Usage::

    with LlamaCppServer() as server:
        OpenAICompatibleSLM(server.model, base_url=server.base_url)
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from confidence_router.backends.models import smollm2_path

ALIAS = "smollm2-llama-cpp"
N_CTX = 1024


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LlamaCppServer:
    """The subprocess: ``start``/``stop``, its ``base_url`` (``.../v1``), ``model`` alias.

    Args:
        model_path: the GGUF file (default: the embedded SmolLM2-135M-Instruct).
        alias: the name ``/v1/models`` lists (any name is answered).
        n_ctx: the context in tokens.
        threads: llama.cpp threads for generation and for the prompt.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        alias: str = ALIAS,
        n_ctx: int = N_CTX,
        threads: int = 1,
    ) -> None:
        self.model_path = model_path or smollm2_path()
        self.model = alias
        self.n_ctx = n_ctx
        self.threads = threads
        self.port = 0
        self.startup_s: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"LlamaCppServer(base_url={self.base_url!r}, model={self.model!r})"

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.host}/v1"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model_path),
            "--model_alias",
            self.model,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.threads),
            "--n_threads_batch",
            str(self.threads),
            "--seed",
            "0",
            "--verbose",
            "False",
        ]

    def start(self, within: float = 120.0) -> LlamaCppServer:
        """Start the process and wait until ``GET /v1/models`` lists the alias."""
        if self._process is not None:
            return self
        started = time.monotonic()
        self.port = _free_port()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self._process = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = started + within
        while True:
            if self._process.poll() is not None:
                log = self.log()
                self.stop()
                raise RuntimeError(f"llama_cpp.server exited at start:\n{log}")
            if self._listed():
                break
            if time.monotonic() > deadline:
                log = self.log()
                self.stop()
                raise RuntimeError(f"llama_cpp.server not ready within {within:g}s:\n{log}")
            time.sleep(0.1)
        self.startup_s = time.monotonic() - started
        return self

    def _listed(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as response:
                body: Any = json.load(response)
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return any(m.get("id") == self.model for m in body.get("data", []))

    def log(self) -> str:
        """What the server printed so far (uvicorn's access log, llama.cpp errors)."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def stop(self, timeout: float = 10.0) -> int | None:
        """Terminate the process (kill it if it does not go); return its exit code."""
        process, self._process = self._process, None
        code = None
        if process is not None:
            process.terminate()
            try:
                code = process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait(timeout)
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None
        return code

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["ALIAS", "N_CTX", "LlamaCppServer"]
