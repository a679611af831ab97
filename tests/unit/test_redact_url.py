"""Server URLs as errors and reprs show them: credentials masked, the rest untouched."""

from __future__ import annotations

import pytest

from confidence_router.backends._checks import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:11434", "http://127.0.0.1:11434"),
        ("https://gpu-box:8000/v1", "https://gpu-box:8000/v1"),
        ("https://alice:s3cret@proxy.example/v1", "https://alice:***@proxy.example/v1"),
        ("https://tok3n@proxy.example/v1", "https://***@proxy.example/v1"),
        (
            "https://proxy.example/v1?api_key=k1&region=eu&access_token=t2",
            "https://proxy.example/v1?api_key=***&region=eu&access_token=***",
        ),
        ("http://a:b@c@host:1/v1", "http://a:***@host:1/v1"),  # '@' in the password
    ],
)
def test_credentials_are_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown
