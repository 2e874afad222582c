"""Fixtures of the agent's end-to-end tests: a fresh database per server, on each backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from tests.conftest import BACKENDS
from tests.e2e_agent.support import fresh_database


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` or ``postgresql``: each module's servers run once on each."""
    return request.param


@pytest.fixture(scope="module")
def new_database(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], str]]:
    """Makes fresh databases of this module's backend, all dropped at the module's end."""
    directory = tmp_path_factory.mktemp("agent-db")
    with ExitStack() as stack:
        yield lambda: stack.enter_context(fresh_database(backend, directory))
