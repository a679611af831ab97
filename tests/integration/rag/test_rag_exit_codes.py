"""``confidence-router rag`` exit codes the other tests did not reach (issue 21).

130 (Ctrl-C while answering) and 9 at the very end (the ``--output`` folder
went away while the command ran) need a real process: the command runs as a
user runs it, and the test acts once the first answer has been printed. 5 for
a file nobody can read works as root too: a write-only kernel attribute
(sysfs refuses to open it for reading, whoever asks) linked into the folder.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from confidence_router_rag.cli import Exit
from tests.integration.rag.conftest import EXAMPLE_DOCS, REPO, RunRag
from tests.support.ollama_server import OllamaTestServer

Q = "What is the vault code?"
# The test acts after the first answer, seconds before the second one can be done.
QUESTIONS = [Q, "Who wrote the onboarding notes?", "What does the document say about backups?"]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


class Running:
    """The command in a subprocess; stdout read on a thread so the test can wait on it."""

    def __init__(self, *args: str | Path, questions: int = len(QUESTIONS), repeat: int = 1) -> None:
        argv = [sys.executable, "-m", "confidence_router.cli.main", "rag", *map(str, args)]
        argv += ["--slm", "embedded:smollm2", "--fallback", "embedded:gemma3", "--no-progress"]
        for question in QUESTIONS[:questions] * repeat:
            argv += ["-q", question]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            # As from a terminal: Ctrl-C interrupts, even if whoever runs the tests
            # ignores SIGINT (a child inherits that, and Python then never raises
            # KeyboardInterrupt: the command would answer everything and exit 0).
            preexec_fn=_default_sigint,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.out.append(line)

    def wait_for_first_answer(self, within: float = 300) -> None:
        deadline = time.monotonic() + within
        while not any("why:" in line for line in self.out):
            assert self.process.poll() is None, f"the command ended early: {self.finish()}"
            assert time.monotonic() < deadline, "no answer was printed in time"
            time.sleep(0.05)

    def finish(self, within: float = 300) -> tuple[int, str]:
        assert self.process.stderr is not None
        try:
            code = self.process.wait(within)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        self.reader.join(10)
        return code, self.process.stderr.read()


@pytest.fixture
def running() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for run in started:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


def test_ctrl_c_while_answering_exits_130_and_writes_nothing(
    running: list[Running], tmp_path: Path
) -> None:
    output = tmp_path / "answers.json"
    # Many questions, so that a busy machine cannot finish them all between the
    # first answer and the signal (the test would then see exit 0, not a failure).
    run = Running(EXAMPLE_DOCS, "--output", output, repeat=10)
    running.append(run)
    run.wait_for_first_answer()
    run.process.send_signal(signal.SIGINT)
    code, err = run.finish()
    assert code == Exit.INTERRUPTED == 130
    assert _one_error_line(err).endswith("interrupted; nothing was written")
    assert not output.exists() and list(tmp_path.iterdir()) == []
    assert sum(line.startswith("Q") for line in run.out) < len(QUESTIONS) * 10


def test_an_output_folder_gone_at_the_end_exits_9(running: list[Running], tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    output = folder / "answers.json"
    run = Running(EXAMPLE_DOCS, "--output", output, questions=2)
    running.append(run)
    run.wait_for_first_answer()  # the early check has passed: the folder was there
    shutil.rmtree(folder)
    code, err = run.finish()
    assert code == Exit.OUTPUT == 9
    line = _one_error_line(err)
    assert line.startswith("error:") or "cannot write" in line
    assert "cannot write" in line and str(output) in line
    assert sum(line.startswith("Q") for line in run.out) == 2  # both answered first


# -- in process ------------------------------------------------------------------------------


def test_a_broken_pdf_exits_5_naming_it(run_rag: RunRag, tmp_path: Path) -> None:
    (tmp_path / "good.md").write_text("The vault code is 4721.")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    result = run_rag(tmp_path, "-q", Q)
    assert result.code == Exit.UNREADABLE == 5
    line = _one_error_line(result.err)
    assert "broken.pdf" in line
    assert result.out == ""


def _unreadable_even_for_root() -> str | None:
    """A file that opening for reading refuses to everyone: a write-only sysfs attribute."""
    for path in ["/sys/bus/pci/rescan", *sorted(glob.glob("/sys/bus/*/uevent"))]:
        try:
            with open(path, "rb"):
                pass
        except PermissionError:
            return path
        except OSError:
            continue
    return None


def test_a_file_nobody_may_read_exits_5(run_rag: RunRag, tmp_path: Path) -> None:
    (tmp_path / "good.md").write_text("The vault code is 4721.")
    secret = tmp_path / "secret.md"
    if os.geteuid() != 0:
        secret.write_text("hidden")
        secret.chmod(0)
    else:
        target = _unreadable_even_for_root()
        if target is None:
            pytest.skip("running as root and no write-only sysfs attribute to link to")
        secret.symlink_to(target)
    try:
        result = run_rag(tmp_path, "-q", Q)
    finally:
        if not secret.is_symlink():
            secret.chmod(0o600)
    assert result.code == Exit.UNREADABLE == 5
    line = _one_error_line(result.err)
    assert "secret.md" in line and "permission denied" in line


@pytest.mark.parametrize("provider", ["ollama", "openai"])
def test_an_unknown_slm_model_exits_7(
    provider: str, run_rag: RunRag, ollama_server: OllamaTestServer
) -> None:
    if provider == "ollama":
        argv = ["--slm", "ollama:nope:1b", "--ollama-host", ollama_server.host]
    else:
        argv = ["--slm", f"openai:nope:1b@{ollama_server.host}/v1"]
    result = run_rag(EXAMPLE_DOCS, "-q", Q, *argv)
    assert result.code == Exit.OLLAMA == 7
    line = _one_error_line(result.err)
    assert "nope:1b" in line
    assert result.out == ""
