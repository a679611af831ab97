"""MkDocs hooks (``hooks:`` in mkdocs.yml) for the docs site.

Some docstrings still name other objects with Sphinx roles (:class:`Router`); Markdown
renders the name as code and leaves the role in front of it. Drop the role, so the
API reference reads ``Router`` rather than ``:class:Router``.
"""

from __future__ import annotations

import re
from typing import Any

_SPHINX_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|exc|data|obj):(?=<code>)")


def on_page_content(html: str, **kwargs: Any) -> str:
    return _SPHINX_ROLE.sub("", html)
