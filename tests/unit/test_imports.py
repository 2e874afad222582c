"""Every module imports on its own, in a fresh interpreter: no import cycle hides behind
the order in which the application happens to import things."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aichats

PACKAGE = Path(aichats.__file__).parent


def modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        if "migrations" in relative.parts:  # Alembic loads these itself, with its context
            continue
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        names.append(".".join(parts))
    return names


def imports_alone(name: str) -> str | None:
    """None if ``import name`` works in a new interpreter, else the error's last line."""
    result = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=120)
    return None if result.returncode == 0 else result.stderr.strip().splitlines()[-1]


def test_every_module_imports_alone() -> None:
    names = modules()
    assert "aichats.web.routes" in names and "aichats.api.app" in names
    with ThreadPoolExecutor(4) as pool:  # a few interpreters at a time: some seconds in all
        errors = dict(zip(names, pool.map(imports_alone, names), strict=True))
    assert {name: error for name, error in errors.items() if error} == {}
