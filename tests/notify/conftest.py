from __future__ import annotations

from tests.services.conftest import anyio_backend, db  # noqa: F401 - shared fixtures
