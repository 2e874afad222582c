"""The providers' keys and addresses are settings, read under our names and the SDKs' own."""

from __future__ import annotations

import pytest

from aichats.agent.models import load_model
from aichats.agent.models.anthropic_api import AnthropicModel
from aichats.agent.models.openai_compatible import OpenAIModel
from aichats.config import Settings

pytestmark = pytest.mark.anyio
PROVIDER_VARIABLES = [
    f"{prefix}{name}"
    for prefix in ("", "AICHATS_")
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROVIDER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _models(settings: Settings) -> tuple[OpenAIModel, AnthropicModel]:
    openai_model = load_model("openai:any", settings)
    anthropic_model = load_model("anthropic:any", settings)
    assert isinstance(openai_model, OpenAIModel) and isinstance(anthropic_model, AnthropicModel)
    return openai_model, anthropic_model


@pytest.mark.parametrize("prefix", ["", "AICHATS_"])
async def test_keys_and_addresses_reach_the_sdks(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    monkeypatch.setenv(f"{prefix}OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv(f"{prefix}OPENAI_BASE_URL", "http://openai.test/v1")
    monkeypatch.setenv(f"{prefix}ANTHROPIC_API_KEY", "sk-ant")
    monkeypatch.setenv(f"{prefix}ANTHROPIC_BASE_URL", "http://anthropic.test")
    settings = Settings()
    # Once read into Settings, the SDKs are given them: they no longer read the environment themselves.
    for name in PROVIDER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    openai_model, anthropic_model = _models(settings)
    try:
        assert openai_model._client.api_key == "sk-openai"
        assert str(openai_model._client.base_url) == "http://openai.test/v1/"
        assert anthropic_model._client.api_key == "sk-ant"
        assert str(anthropic_model._client.base_url) == "http://anthropic.test"
    finally:
        await openai_model.close()
        await anthropic_model.close()


async def test_our_names_win_and_keys_stay_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-theirs")
    monkeypatch.setenv("AICHATS_OPENAI_API_KEY", "sk-ours")
    settings = Settings()
    assert "sk-ours" not in repr(settings)
    openai_model, anthropic_model = _models(settings)
    try:
        assert openai_model._client.api_key == "sk-ours"
    finally:
        await openai_model.close()
        await anthropic_model.close()


async def test_without_settings_local_servers_still_work() -> None:
    settings = Settings(openai_base_url="http://127.0.0.1:11434/v1")  # by field name, too
    openai_model, anthropic_model = _models(settings)
    try:
        assert openai_model._client.api_key == "not-needed"  # Ollama and co. take any key
        assert str(openai_model._client.base_url) == "http://127.0.0.1:11434/v1/"
        assert anthropic_model._client.api_key is None
    finally:
        await openai_model.close()
        await anthropic_model.close()
