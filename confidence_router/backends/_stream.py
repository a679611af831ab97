"""What a served answer must show before it counts as complete (shared by the served backends).

Two promises, the same for Ollama and OpenAI-compatible servers:

* **A stream is complete only with its terminal marker** (Ollama's final
  `done: true` object, OpenAI's chunk with `finish_reason`; a missing
  `data: [DONE]` after it is tolerated, as the official client does). A
  stream closed cleanly before it is an unfinished answer:
  `IncompleteResponseError`, never a short answer.
* **Every token of the answer has its logprob.** A chunk whose text came with
  no logprob entry, and no entry received earlier without text is waiting for
  it (Ollama may send a token's entry before its parser releases the text),
  makes the answer unscorable: `MissingLogprobsError`. At the end, the
  entries' tokens must spell at least as many characters as the text (a token
  split inside a UTF-8 character reads as U+FFFD, one character per piece).
"""

from __future__ import annotations

from ..errors import IncompleteResponseError, MissingLogprobsError
from ..types import Generation, TokenChunk


def check_covered(gen: Generation, where: str, hint: str = "") -> None:
    """Raise MissingLogprobsError when the logprob entries cannot account for the text."""
    if not gen.text:
        return
    if len(gen.token_logprobs) == 0:
        raise MissingLogprobsError(
            f"{where} answered {gen.model!r} without logprobs{hint}", model=gen.model
        )
    spelled = sum(len(t) for t in gen.tokens)
    if gen.tokens and spelled < len(gen.text):
        raise MissingLogprobsError(
            f"{where} answered {gen.model!r} with text without logprobs: "
            f"{len(gen.token_logprobs)} logprob entries spell {spelled} of the answer's "
            f"{len(gen.text)} characters, so the answer cannot be scored",
            model=gen.model,
        )


class StreamCheck:
    """Follows one served stream: logprob coverage chunk by chunk, then its terminal marker.

    `marker` names the terminal marker in error messages; `hint` is added
    to the "without logprobs" error of a server that sent none at all.
    """

    def __init__(self, model: str, where: str, marker: str, hint: str = "") -> None:
        self.model = model
        self.where = where
        self.marker = marker
        self.hint = hint
        self.objects = 0  # anything the server sent, even an opener with no text
        self.tokens = 0  # logprob entries received
        self.text_chars = 0
        self.token_chars = 0
        self.spare = 0  # entries received without text, waiting for theirs
        self.finished = False

    def received(self) -> None:
        """The server sent one more object (before it is turned into a chunk)."""
        self.objects += 1

    def see(self, chunk: TokenChunk) -> None:
        """Check one chunk as it arrives; raise at the first text without a logprob."""
        n = len(chunk.token_logprobs)
        self.tokens += n
        self.token_chars += sum(len(t) for t in chunk.tokens)
        self.text_chars += len(chunk.text)
        if chunk.text:
            if n == 0 and self.spare == 0:
                raise self._missing()
            self.spare = 0
        else:
            self.spare += n
        if chunk.finish_reason is not None:
            self.finished = True

    def _missing(self) -> MissingLogprobsError:
        if self.tokens == 0:
            return MissingLogprobsError(
                f"{self.where} streamed {self.model!r} without logprobs{self.hint}",
                model=self.model,
            )
        return MissingLogprobsError(
            f"{self.where} streamed text without logprobs for {self.model!r} after "
            f"{self.tokens} token(s) that had them: the answer cannot be scored",
            model=self.model,
        )

    def end(self) -> None:
        """The stream ended: raise unless its terminal marker came and the text is covered."""
        if not self.finished:
            raise incomplete(self.model, self.where, self.marker, self.objects, self.tokens)
        if self.tokens and self.token_chars < self.text_chars:
            raise MissingLogprobsError(
                f"{self.where} streamed {self.model!r} with text without logprobs: "
                f"{self.tokens} logprob entries spell {self.token_chars} of the answer's "
                f"{self.text_chars} characters, so the answer cannot be scored",
                model=self.model,
            )


def incomplete(
    model: str, where: str, marker: str, objects: int, tokens: int
) -> IncompleteResponseError:
    """The error of a stream that ended before its terminal marker."""
    if objects == 0:
        return IncompleteResponseError(
            f"the server ({where}) closed the stream for {model!r} without sending anything "
            f"(HTTP 200, empty body), so there is no answer; llama-cpp-python's server does "
            f"this for a streamed prompt longer than its context",
            model=model,
            tokens_received=0,
        )
    return IncompleteResponseError(
        f"{where} ended the stream for {model!r} after {tokens} token(s) without its "
        f"terminal marker ({marker}): the answer is incomplete",
        model=model,
        tokens_received=tokens,
    )


__all__ = ["StreamCheck", "check_covered", "incomplete"]
