"""Model specs, parsed in one place (``confidence_router.backends.spec``) for every command."""

from __future__ import annotations

import pytest

from confidence_router import ConfigurationError
from confidence_router.backends.spec import ModelSpec, SLMSpec, parse_model_spec, parse_slm_spec


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("embedded", ModelSpec("embedded", "")),
        ("", ModelSpec("embedded", "")),
        ("embedded:gemma3", ModelSpec("embedded", "gemma3")),
        ("ollama:llama3.1:8b", ModelSpec("ollama", "llama3.1:8b")),
        ("OpenAI:gpt-4o-mini", ModelSpec("openai", "gpt-4o-mini")),
        ("ollama:nomodel@http://127.0.0.1:9", ModelSpec("ollama", "nomodel", "http://127.0.0.1:9")),
        (
            "openai:Q/Q-1.5B@http://gpu:8000/v1",
            ModelSpec("openai", "Q/Q-1.5B", "http://gpu:8000/v1"),
        ),
        # any other provider is LangChain's: the text after the colon is its model name
        ("anthropic:claude-haiku", ModelSpec("anthropic", "claude-haiku")),
        ("embedded:gemma3@http://h", ModelSpec("embedded", "gemma3@http://h")),
    ],
)
def test_model_specs_parse(value: str, expected: ModelSpec) -> None:
    spec = parse_model_spec(value, "--fallback")
    assert spec == expected
    assert spec.raw == value


@pytest.mark.parametrize("value", ["gpt-4o-mini", "ollama:", ":x", "ollama:@http://h"])
def test_a_bad_model_spec_names_the_option(value: str) -> None:
    with pytest.raises(ConfigurationError, match="--fallback") as info:
        parse_model_spec(value, "--fallback")
    assert info.value.field == "--fallback"


@pytest.mark.parametrize(
    "value", ["ollama:qwen2.5:1.5b", "OLLAMA:a@b@http://x:1", "openai:m@https://h:1/v1"]
)
def test_served_models_parse_as_the_slm_spec_parser_reads_them(value: str) -> None:
    served = parse_model_spec(value, "--slm").as_slm_spec()
    assert served == parse_slm_spec(value, "--slm")
    assert isinstance(served, SLMSpec)


def test_an_embedded_or_langchain_model_is_not_a_served_slm() -> None:
    assert parse_model_spec("embedded:smollm2").as_slm_spec() is None
    assert parse_model_spec("anthropic:claude-haiku").as_slm_spec() is None
