"""The documentation names every setting with its real default."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices

from aichats.config import Settings

ROOT = Path(__file__).parents[2]


def test_every_setting_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
        row = f"| `AICHATS_{name.upper()}` | `{default}` |"
        assert row in text, name
        line = next(line for line in text.splitlines() if line.startswith(row))
        aliases = field.validation_alias.choices if isinstance(field.validation_alias, AliasChoices) else []
        for alias in aliases:  # the providers' own names (OPENAI_API_KEY...) are documented beside ours
            assert f"`{alias}`" in line, (name, alias)
