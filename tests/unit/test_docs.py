"""The documentation names every setting with its real default."""

from __future__ import annotations

from pathlib import Path

from aichats.config import Settings

ROOT = Path(__file__).parents[2]


def test_every_setting_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
        assert f"| `AICHATS_{name.upper()}` | `{default}` |" in text, name
