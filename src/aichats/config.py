"""Every setting of aichats, in one typed place.

Each field is read from the environment variable ``AICHATS_<FIELD>`` (for example
``AICHATS_DATABASE_URL``). ``docs/configuration.md`` documents them all; a test
checks that the two stay in step.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AICHATS_", extra="ignore")

    database_url: str = Field(
        "sqlite:///aichats.db",
        description=(
            "Where data lives. `sqlite:///relative/path.db` or `sqlite:////absolute/path.db` "
            "for the embedded database; `postgresql://user:password@host:port/dbname` "
            "for PostgreSQL."
        ),
    )
    host: str = Field("127.0.0.1", description="Interface `aichats serve` listens on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port `aichats serve` listens on.")
    migrate_on_start: bool = Field(True, description="Apply database migrations when `aichats serve` starts.")
    postgres_pool_size: int = Field(
        10, ge=1, le=1000, description="Connections each server process keeps to PostgreSQL."
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body accepted; larger ones get 413.")
    idempotency_ttl_seconds: int = Field(
        86_400,
        ge=60,
        description="How long a stored `Idempotency-Key` answer is replayed before the key may be reused.",
    )

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:// or postgresql://")
        return value


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
