"""Contracts: the promises a family of parts keeps, written once, run against each part.

Each module holds a base class with the tests; a test file subclasses it once per part
(as ``langchain-tests``' standard suites are used) and adds what is that part's own.
The modules are registered for pytest's assertion rewriting, as test files are.
"""

import pytest

pytest.register_assert_rewrite("tests.contracts.backend_failures", "tests.contracts.face_failures")
