"""Construction, validation and delegation of ConfidenceRouterChat: no model is called."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.runnables import RunnableBinding
from langchain_ollama import ChatOllama
from pydantic import BaseModel

from confidence_router import (
    ConfigurationError,
    InvalidInputError,
    OllamaSLM,
    Price,
    ThresholdPolicy,
)
from langchain_confidence_router import ConfidenceRouterChat

NOWHERE = "http://127.0.0.1:9"


def _fallback() -> ChatOllama:
    return ChatOllama(model="gemma3:270m", base_url=NOWHERE)


def _router(**overrides: Any) -> ConfidenceRouterChat:
    params: dict[str, Any] = {
        "slm_model": "smollm2:135m",
        "base_url": NOWHERE,
        "fallback": _fallback(),
    }
    params.update(overrides)
    return ConfidenceRouterChat(**params)


def test_defaults_build_an_ollama_slm_and_the_policy_shipped_for_it() -> None:
    llm = _router()
    assert isinstance(llm.router.slm, OllamaSLM)
    assert llm.router.slm.host == NOWHERE
    assert llm.router.slm.temperature == 0.0
    assert llm.router.slm.timeout == 60.0
    # no policy given: the one shipped for SmolLM2, named with its provenance
    assert llm.router.policy_label == "smollm2-135m/extractive-qa (fitted on this SLM)"
    assert "policy='smollm2-135m/extractive-qa (fitted on this SLM)'" in repr(llm)
    assert llm.router.fallback_model == "gemma3:270m"
    assert llm.model_name == "smollm2:135m -> gemma3:270m"
    assert llm.stats.queries == 0


def test_build_options_reach_the_built_slm() -> None:
    llm = _router(temperature=0.3, timeout=5, top_logprobs=3, prompt_format="completion")
    slm = llm.router.slm
    assert (slm.temperature, slm.timeout, slm.top_logprobs, slm.prompt_format) == (
        0.3,
        5.0,
        3,
        "completion",
    )


def test_a_given_backend_is_used_as_it_is() -> None:
    slm = OllamaSLM("smollm2:135m", host=NOWHERE)
    policy = ThresholdPolicy.seed(max_length=8)
    llm = ConfidenceRouterChat(slm=slm, fallback=_fallback(), policy=policy, strict=True)
    assert llm.router.slm is slm
    assert llm.router.policy is policy
    assert llm.router.strict is True


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"slm_modle": "x"}, "slm_modle"),
        ({"fallback": "gpt-4o"}, "fallback"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"timeout": 0}, "timeout"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"prompt_format": "raw"}, "prompt_format"),
        ({"stop": "you"}, "stop"),
        ({"strict": "yes"}, "strict"),
        ({"max_retries": -1}, "max_retries"),
        ({"policy": 0.5}, "policy"),
        ({"slm_price": 3.0}, "slm_price"),
        ({"slm": OllamaSLM("s", host=NOWHERE)}, "slm"),  # both slm and slm_model
        ({"slm_model": None}, "slm"),  # neither
    ],
)
def test_invalid_configuration_fails_at_construction_naming_the_field(
    kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        _router(**kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}:")


def test_a_typo_suggests_the_field_that_was_meant() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'slm_model'"):
        _router(slm_modle="smollm2:135m")


def test_a_missing_fallback_is_named() -> None:
    with pytest.raises(ConfigurationError, match="fallback: is required"):
        ConfidenceRouterChat(slm_model="smollm2:135m")


@pytest.mark.parametrize("name", ["base_url", "timeout", "top_logprobs", "prompt_format"])
def test_build_only_options_are_refused_with_a_given_backend(name: str) -> None:
    value = {"base_url": NOWHERE, "timeout": 5, "top_logprobs": 2, "prompt_format": "chat"}[name]
    with pytest.raises(ConfigurationError) as info:
        ConfidenceRouterChat(
            slm=OllamaSLM("s", host=NOWHERE), fallback=_fallback(), **{name: value}
        )
    assert info.value.field == name


def test_a_temperature_that_contradicts_the_given_backend_is_refused() -> None:
    slm = OllamaSLM("s", host=NOWHERE, temperature=0.7)
    with pytest.raises(ConfigurationError, match="temperature 0.7"):
        ConfidenceRouterChat(slm=slm, fallback=_fallback(), temperature=0)
    assert ConfidenceRouterChat(slm=slm, fallback=_fallback(), temperature=0.7)


def test_the_slm_host_comes_from_ollama_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:11")
    llm = ConfidenceRouterChat(slm_model="smollm2:135m", fallback=_fallback())
    assert llm.base_url == "http://127.0.0.1:11"


@pytest.mark.parametrize("kwargs", [{"temperature": 0.5}, {"model": "other"}, {"tools": []}])
def test_unsupported_per_call_arguments_are_refused_before_any_model_call(
    kwargs: dict[str, Any],
) -> None:
    # The socket guard would turn any model call into a SocketBlockedError.
    with pytest.raises(InvalidInputError, match="per-call argument"):
        _router().invoke("hi", **kwargs)


def test_tracing_params_name_the_pair_honour_overrides_and_standard_params() -> None:
    llm = _router(temperature=0.2, max_tokens=16, stop=["\n"])
    params = llm._get_ls_params()
    assert params == {
        "ls_provider": "confidence_router",
        "ls_model_name": "smollm2:135m -> gemma3:270m",
        "ls_model_type": "chat",
        "ls_temperature": 0.2,
        "ls_max_tokens": 16,
        "ls_stop": ["\n"],
    }
    assert llm._get_ls_params(model="x", max_tokens=4)["ls_model_name"] == "x"
    assert llm._get_ls_params(max_tokens=4)["ls_max_tokens"] == 4


def test_identifying_params_are_plain_data() -> None:
    params = _router(slm_price=Price(0.0, 0.0))._identifying_params
    assert params["slm_model"] == "smollm2:135m"
    assert params["fallback_model"] == "gemma3:270m"
    assert params["policy"]["type"] == "average"  # the shipped SmolLM2 policy, as JSON data


class Answer(BaseModel):
    """A short answer."""

    text: str


def test_bind_tools_returns_the_fallbacks_own_binding() -> None:
    llm = _router()
    bound = llm.bind_tools([Answer], tool_choice="any")
    assert isinstance(bound, RunnableBinding)
    assert bound.bound is llm.fallback
    assert bound.kwargs["tools"][0]["function"]["name"] == "Answer"


def test_structured_output_comes_from_the_fallback() -> None:
    llm = _router()
    runnable = llm.with_structured_output(Answer)
    steps = getattr(runnable, "steps", [runnable])
    assert any(getattr(step, "bound", None) is llm.fallback for step in steps)
