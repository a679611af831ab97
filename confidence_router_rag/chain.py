"""The chain: retrieve, fit the passages to the SLM's context window, prompt, answer.

`question -> {docs, question} -> prompt -> chat model`: the usual LangChain "RAG
with sources" shape, whose chat model is the router (`.models`). The prompt
is the evaluation's `rag-v2` (`confidence_router.eval.prompts`), so a policy
calibrated on recorded traces sees exactly what this app sends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confidence_router.backends.base import SLMBackend
from confidence_router.errors import ContextWindowExceededError
from confidence_router.eval.prompts import ABSTAIN_ANSWER, RAG_SYSTEM_PROMPT, RAG_USER_PROMPT
from confidence_router.types import Message

if TYPE_CHECKING:
    from langchain_core.documents import Document
    from langchain_core.language_models import BaseChatModel
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import Runnable

#: The SLM's prompt, shared with the evaluation's `rag-v2` prompt so policies
#: can be calibrated on exactly what this command sends. It lets the model say
#: that the documents do not hold the answer (`ABSTAIN_ANSWER`).
SYSTEM_PROMPT = RAG_SYSTEM_PROMPT
USER_PROMPT = RAG_USER_PROMPT
#: One worked example, in the same shape as `USER_PROMPT`, for base models
#: (completion prompts): without it Gemma 3 270M often starts its answer with a
#: newline, an empty answer since generation stops there.
BASE_MODEL_DEMO = (
    "Context: The Eiffel Tower was built by Gustave Eiffel's company and finished in 1889 "
    "for the World's Fair in Paris.\n"
    "Question: When was the Eiffel Tower finished?\n"
    "Answer: 1889"
)


class QuestionTooLongError(ContextWindowExceededError):
    """The question alone does not fit the SLM's context window."""


def user_template(demo: bool = False) -> str:
    """The human message's template, led by `BASE_MODEL_DEMO` for base-model SLMs."""
    return f"{BASE_MODEL_DEMO}\n\n{USER_PROMPT}" if demo else USER_PROMPT


def rag_prompt(demo: bool = False) -> Any:
    """The chat prompt: a short system instruction, then context and question."""
    from langchain_core.prompts import ChatPromptTemplate

    return ChatPromptTemplate.from_messages(
        [("system", SYSTEM_PROMPT), ("human", user_template(demo))]
    )


def format_docs(docs: Sequence[Document]) -> str:
    """Passages separated by blank lines. No source headers: Gemma 3 270M answers
    `[file.md]` lines with more of them (sources are reported beside the answer)."""
    return "\n\n".join(d.page_content for d in docs)


@dataclass(frozen=True)
class TokenBudget:
    """How many prompt tokens the SLM can take, and how to count them exactly."""

    count_prompt: Callable[[list[Message]], int]
    limit: int
    model: str = "slm"
    demo: bool = False

    def prompt_tokens(self, question: str, docs: Sequence[Document]) -> int:
        context = format_docs(docs)
        text = user_template(self.demo).format(context=context, question=question)
        messages = [Message("system", SYSTEM_PROMPT), Message("user", text)]
        return self.count_prompt(messages)

    def check_question(self, question: str) -> None:
        """Raise `QuestionTooLongError` if even an empty context would not fit."""
        needed = self.prompt_tokens(question, [])
        if needed > self.limit:
            raise QuestionTooLongError(
                f"the question takes {needed} prompt tokens but {self.model!r} can take "
                f"{self.limit} (its context window minus the answer's max_tokens); "
                f"shorten it: {question[:60]!r}...",
                model=self.model,
            )

    def fit(self, question: str, docs: Sequence[Document]) -> list[Document]:
        """The leading passages that fit; the least relevant are dropped first."""
        self.check_question(question)
        kept = list(docs)
        while kept and self.prompt_tokens(question, kept) > self.limit:
            kept.pop()
        return kept


def needs_demo(slm: SLMBackend) -> bool:
    """Whether the SLM takes completion prompts (a base model) and so wants the demo."""
    return getattr(slm, "prompt_format", "chat") == "completion"


def token_budget(slm: SLMBackend, max_tokens: int) -> TokenBudget | None:
    """An exact budget for backends that tokenize locally (llama.cpp); None otherwise."""
    tokenize = getattr(slm, "tokenize_prompt", None)
    window = getattr(slm, "context_window", None)
    if tokenize is None or not isinstance(window, int):
        return None
    return TokenBudget(
        lambda msgs: len(tokenize(msgs)), window - max_tokens, slm.model, needs_demo(slm)
    )


def build_chain(
    retriever: BaseRetriever | Runnable[str, list[Document]],
    chat: BaseChatModel,
    budget: TokenBudget | Sequence[TokenBudget] | None = None,
    *,
    demo: bool = False,
) -> Runnable[str, dict[str, Any]]:
    """question -> `{"question", "docs", "answer": AIMessage}`.

    The usual LangChain "RAG with sources" shape: retrieve in parallel with
    passing the question through, then `.assign` the answer from
    `prompt | chat` so the caller also sees which passages were used.
    `budget` drops the least relevant passages that would overflow the SLM's
    context window (a ladder gives one budget per SLM: the passages must fit
    every one); `demo` leads the prompt with a worked example (base models).
    """
    from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough

    budgets = [] if budget is None else [budget] if isinstance(budget, TokenBudget) else budget

    def fitted(inputs: dict[str, Any]) -> list[Document]:
        docs: list[Document] = inputs["docs"]
        for each in budgets:
            docs = each.fit(inputs["question"], docs)
        return docs

    answer = (
        RunnablePassthrough.assign(context=RunnableLambda(lambda x: format_docs(x["docs"])))
        | rag_prompt(demo)
        | chat
    )
    return (
        RunnableParallel(docs=retriever, question=RunnablePassthrough())
        .assign(docs=RunnableLambda(fitted))
        .assign(answer=answer)
    )


__all__ = [
    "ABSTAIN_ANSWER",
    "BASE_MODEL_DEMO",
    "SYSTEM_PROMPT",
    "USER_PROMPT",
    "QuestionTooLongError",
    "TokenBudget",
    "build_chain",
    "format_docs",
    "needs_demo",
    "rag_prompt",
    "token_budget",
    "user_template",
]
