"""Construction, validation and metadata of the LlamaIndex LLMs (no model is called)."""

from __future__ import annotations

import json

import pytest
from llama_index.core.llms import LLM, MockLLM
from llama_index.llms.ollama import Ollama

from confidence_router import (
    ConfigurationError,
    LogisticPolicy,
    OllamaSLM,
    Price,
    ThresholdPolicy,
)
from llamaindex_confidence_router import ConfidenceRouterLLM, EmbeddedLLM

NOWHERE = "http://127.0.0.1:9"  # discard port: nothing here is ever contacted


def _fallback(context_window: int = 8192, **kwargs: object) -> Ollama:
    # An explicit context window: LlamaIndex's Ollama then needs no server for metadata.
    return Ollama(model="llama3.1:8b", base_url=NOWHERE, context_window=context_window, **kwargs)


def _slm(num_ctx: int | None = 4096) -> OllamaSLM:
    return OllamaSLM("qwen2.5:1.5b", host=NOWHERE, num_ctx=num_ctx)


def test_is_a_full_llamaindex_llm_not_a_customllm() -> None:
    llm = ConfidenceRouterLLM(_slm(), _fallback())
    assert isinstance(llm, LLM)
    assert type(llm).__mro__[1] is LLM
    assert llm.class_name() == "ConfidenceRouterLLM"


def test_metadata_takes_the_smallest_context_window_and_does_no_io() -> None:
    llm = ConfidenceRouterLLM(_slm(num_ctx=4096), _fallback(8192), num_output=128)
    for _ in range(3):  # read on every engine call: must stay cheap, socket is blocked
        meta = llm.metadata
    assert meta.context_window == 4096
    assert meta.num_output == 128
    assert meta.is_chat_model is True
    assert meta.is_function_calling_model is False
    assert meta.model_name == "confidence-router:qwen2.5:1.5b->llama3.1:8b"
    smaller_fallback = ConfidenceRouterLLM(_slm(num_ctx=4096), _fallback(2048))
    assert smaller_fallback.metadata.context_window == 2048


def test_num_output_defaults_to_the_fallbacks() -> None:
    llm = ConfidenceRouterLLM(_slm(), MockLLM(max_tokens=77))
    assert llm.metadata.num_output == 77


def test_is_chat_model_is_taken_from_the_fallback() -> None:
    completion_only = MockLLM(max_tokens=16)
    assert completion_only.metadata.is_chat_model is False
    assert ConfidenceRouterLLM(_slm(), completion_only).metadata.is_chat_model is False
    assert ConfidenceRouterLLM(_slm(), _fallback()).metadata.is_chat_model is True


def test_slm_context_window_argument_counts_when_the_backend_does_not_say() -> None:
    no_ctx = _slm(num_ctx=None)
    assert ConfidenceRouterLLM(no_ctx, _fallback(8192)).metadata.context_window == 8192
    llm = ConfidenceRouterLLM(no_ctx, _fallback(8192), slm_context_window=1024)
    assert llm.metadata.context_window == 1024


def test_a_model_name_builds_an_ollama_slm_with_base_url_and_timeout() -> None:
    llm = ConfidenceRouterLLM(
        "smollm2:135m", _fallback(), base_url="http://127.0.0.1:9", request_timeout=5.0
    )
    assert isinstance(llm.slm, OllamaSLM)
    assert llm.slm.model == "smollm2:135m"
    assert llm.slm.host == "http://127.0.0.1:9"
    assert llm.slm.timeout == 5.0
    assert llm.router.slm is llm.slm


def test_policy_strict_and_prices_reach_the_core_router() -> None:
    policy = ThresholdPolicy.seed(max_length=32)
    llm = ConfidenceRouterLLM(
        _slm(), _fallback(), policy=policy, strict=True, fallback_price=Price(1.0, 2.0)
    )
    assert llm.router.policy is policy
    assert llm.router.strict is True
    assert llm.router.fallback_price == Price(1.0, 2.0)
    assert llm.router.fallback_model == "llama3.1:8b"
    assert llm.stats.queries == 0


def test_payload_and_serialisation_hold_no_secret() -> None:
    secret = "Bearer sk-very-secret"
    llm = ConfidenceRouterLLM(_slm(), _fallback(headers={"Authorization": secret}))
    assert secret not in json.dumps(llm.to_payload(), default=str)
    assert secret not in llm.to_json()
    assert secret not in repr(llm.metadata)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_ouput": 64}, "num_ouput"),
        ({"modle": "x"}, "modle"),
        ({"temperature": 0.2}, "temperature"),
        ({"strict": "yes"}, "strict"),
        ({"num_output": 0}, "num_output"),
        ({"num_output": 5000}, "num_output"),  # no room left in a 4096-token window
        ({"num_output": True}, "num_output"),
        ({"slm_context_window": -1}, "slm_context_window"),
        ({"policy": "threshold"}, "policy"),
        ({"slm_price": 0.5}, "slm_price"),
        ({"base_url": "http://127.0.0.1:9"}, "base_url"),  # only for a model name
    ],
)
def test_invalid_configuration_fails_at_construction_naming_the_field(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        ConfidenceRouterLLM(_slm(), _fallback(), **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}:")


def test_a_typo_suggests_the_right_field() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'num_output'"):
        ConfidenceRouterLLM(_slm(), _fallback(), num_ouput=64)


def test_llamaindex_base_fields_are_accepted() -> None:
    llm = ConfidenceRouterLLM(_slm(), _fallback(), system_prompt="Be brief.")
    assert llm.system_prompt == "Be brief."


@pytest.mark.parametrize(
    ("slm", "fallback", "field"),
    [
        (object(), _fallback(), "slm"),
        ("", _fallback(), "model"),  # an empty Ollama model name
        (_slm(), "gpt-4o", "fallback"),
        (_slm(), _slm(), "fallback"),  # a core backend is not a LlamaIndex LLM
    ],
)
def test_wrong_models_fail_naming_the_field(slm: object, fallback: object, field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        ConfidenceRouterLLM(slm, fallback)  # type: ignore[arg-type]
    assert info.value.field == field


def test_a_fallback_whose_metadata_needs_an_unreachable_server_fails_with_a_hint() -> None:
    unreachable = Ollama(model="llama3.1:8b", base_url=NOWHERE, request_timeout=2.0)
    with pytest.raises(ConfigurationError, match=r"^fallback: .*context_window") as info:
        ConfidenceRouterLLM(_slm(), unreachable)
    assert info.value.field == "fallback"


def test_logistic_policy_is_accepted() -> None:
    policy = LogisticPolicy(("mean_logprob",), (1.0,), 0.0, (0.0,), (1.0,))
    assert ConfidenceRouterLLM(_slm(), _fallback(), policy=policy).router.policy is policy


# -- EmbeddedLLM -------------------------------------------------------------------------


def test_embedded_llm_metadata_comes_from_its_backend() -> None:
    llm = EmbeddedLLM(OllamaSLM("qwen2.5:1.5b", host=NOWHERE, num_ctx=2048, max_tokens=32))
    meta = llm.metadata
    assert (meta.context_window, meta.num_output, meta.model_name) == (2048, 32, "qwen2.5:1.5b")
    assert meta.is_chat_model is True


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_tokens": 10}, "max_tokens"),
        ({"num_output": 0}, "num_output"),
        ({"context_window": "big"}, "context_window"),
    ],
)
def test_embedded_llm_validates_its_fields(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        EmbeddedLLM(_slm(), **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_embedded_llm_needs_a_backend_and_a_known_context_window() -> None:
    with pytest.raises(ConfigurationError) as info:
        EmbeddedLLM(_fallback())  # type: ignore[arg-type]
    assert info.value.field == "slm"
    with pytest.raises(ConfigurationError) as info:
        EmbeddedLLM(_slm(num_ctx=None))
    assert info.value.field == "context_window"
