"""``aichats``: the operator's command line.

Commands call the same services as the API. Each opens the configured database
(``AICHATS_DATABASE_URL`` or ``--database-url``), bringing its schema up to date first,
so a fresh machine can create users and keys before the server has ever run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.engine import make_url

from aichats.clock import isoformat_ms, now_ms
from aichats.config import Settings, get_settings
from aichats.errors import ServiceError
from aichats.services import budgets, keys, users
from aichats.services.usage import decimal_tokens
from aichats.storage import database, migrate
from aichats.storage.database import Database

T = TypeVar("T")


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]


def _with_db(ctx: click.Context, action: Callable[[Database], Awaitable[T]]) -> T:
    settings = _settings(ctx)
    migrate.upgrade(settings.database_url)

    async def run() -> T:
        db = await database.connect(settings.database_url, pool_size=2)
        try:
            return await action(db)
        finally:
            await db.close()

    try:
        return asyncio.run(run())
    except ServiceError as error:
        raise click.ClickException(error.message) from None


@click.group()
@click.option("--database-url", envvar="AICHATS_DATABASE_URL", help="Overrides AICHATS_DATABASE_URL.")
@click.pass_context
def main(ctx: click.Context, database_url: str | None) -> None:
    """aichats: self-hosted AI chats with scheduled automation."""
    settings = get_settings()
    if database_url:
        settings = settings.model_copy(update={"database_url": Settings(database_url=database_url).database_url})
    ctx.obj = {"settings": settings}


def _renamed_workers(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    """``serve --workers`` was the number of server processes, a name ``AICHATS_WORKERS`` (agent
    workers) also has: it is refused, saying which of the two is which."""
    if value is not None:
        raise click.UsageError(
            f"--workers is now --processes: use --processes {value} for {value} server processes."
            " Agent workers (in each process) are set by AICHATS_WORKERS.",
            ctx,
        )


@main.command()
@click.option("--host", help="Interface to listen on (AICHATS_HOST, default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (AICHATS_PORT, default 8000).")
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Server (uvicorn) processes; each runs up to AICHATS_WORKERS agent turns at once.",
)
@click.option("--workers", type=int, hidden=True, expose_value=False, callback=_renamed_workers)
@click.option("--access-log/--no-access-log", default=False, show_default=True, help="Log every request.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, processes: int, access_log: bool) -> None:
    """Run the HTTP service (uvicorn), after applying database migrations."""
    import os

    import uvicorn

    from aichats.observability import logs, shared

    settings = _settings(ctx)
    host = host or settings.host
    port = settings.port if port is None else port
    if settings.migrate_on_start:
        migrate.upgrade(settings.database_url)
    logs.configure(settings.log_format)  # uvicorn configures its processes the same way, later
    _startup_summary(settings, host, port, processes)
    # Worker processes rebuild settings from the environment: pass the URL along.
    os.environ["AICHATS_DATABASE_URL"] = settings.database_url
    with shared.directory_for(processes):  # the processes' metrics, added up (observability/shared.py)
        uvicorn.run(
            "aichats.api.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=processes,
            loop="uvloop",
            http="httptools",
            access_log=access_log,
            log_level="info",
            log_config=logs.logging_config(settings.log_format),
            server_header=False,
        )


def _url(host: str, port: int) -> str:
    """The address a browser on this machine opens for a server on ``host:port``."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def _shown_database(url: str) -> str:
    """``url`` without its password; a SQLite file with its absolute path."""
    if url.startswith("sqlite"):
        return f"{url} ({Path(database.sqlite_path(url)).resolve()})"
    return make_url(url).render_as_string(hide_password=True)


def _has_users(settings: Settings) -> bool | None:
    """Whether the database has a user; None when it cannot tell (say, no schema yet)."""

    async def run() -> bool:
        db = await database.connect(settings.database_url, pool_size=1)
        try:
            return await users.any_user(db)
        finally:
            await db.close()

    try:
        return asyncio.run(run())
    except Exception:  # the server itself reports what is wrong with the database
        return None


def _say(settings: Settings, line: str) -> None:
    """A line for the operator on stderr; with ``AICHATS_LOG_FORMAT=json``, a log event
    (a log collector reads every line as one)."""
    if settings.log_format == "json":
        logging.getLogger("aichats.cli").info(line)
    else:
        click.echo(line, err=True)


def _startup_summary(settings: Settings, host: str, port: int, processes: int) -> None:
    """A few lines for whoever just started ``aichats serve``: where, on what, what next."""
    from aichats.services.chats import AgentIdentifier

    if port == 0:  # uvicorn picks the port, and its "Uvicorn running on" line shows it
        url = "the address in uvicorn's line below"
        where = f"aichats: serving the web app (at /) and the API (at /api/v1) on {host}, on a free port (port 0)"
    else:
        url = _url(host, port)
        where = f"aichats: serving the web app at {url} and the API at {url}api/v1"
        if not url.startswith(f"http://{host}:"):
            where += f" (listening on {host})"

    def say(line: str) -> None:
        _say(settings, line)

    say(where)
    say(f"  database: {_shown_database(settings.database_url)}")
    local = False
    for agent in AgentIdentifier:
        model = settings.model_for(agent.value)
        if model.startswith("local:"):
            local = True
            model += " (the built-in local demo model, in a local engine process)"
        say(f"  agent {agent.value}: model {model}")
    if local:
        say(
            "  to switch: AICHATS_MODEL=openai:<model> with OPENAI_BASE_URL"
            " (OpenAI, Ollama, vLLM, llama.cpp's server), or AICHATS_MODEL=anthropic:<model>"
        )
    if settings.workers == 0:
        say("  agent workers: none here (AICHATS_WORKERS=0): replies wait for an `aichats worker` process")
    else:
        per = f"in each of the {processes} server processes" if processes > 1 else "in this process"
        say(f"  agent workers: {settings.workers} {per} (AICHATS_WORKERS{'; --processes' if processes > 1 else ''})")
    if _has_users(settings) is False:
        say(f"  next: no user yet; run `aichats users create --with-key`, then sign in at {url} with the key it prints")
    else:
        say(f"  next: sign in at {url} with an API key (aichats keys create --user USER_ID)")


@main.command()
@click.option("--concurrency", type=int, help="Agent turns this process runs at once (default AICHATS_WORKERS, min 1).")
@click.option("--metrics-port", type=int, help="Serve /metrics, /readyz and /healthz on this port (default: none).")
@click.option("--metrics-host", help="Interface of --metrics-port (default AICHATS_HOST, 127.0.0.1).")
@click.pass_context
def worker(ctx: click.Context, concurrency: int | None, metrics_port: int | None, metrics_host: str | None) -> None:
    """Run agent workers alone (no API), until interrupted. Any number may share one PostgreSQL."""
    import gc
    import signal

    import uvloop

    from aichats.observability import logs
    from aichats.observability.routes import worker_endpoint
    from aichats.runs.background import background

    settings = _settings(ctx)
    migrate.upgrade(settings.database_url)
    logs.configure(settings.log_format)
    count = max(1, concurrency or settings.workers)

    async def run() -> None:
        # Turns in flight wait for their models, not for connections: the usual pool serves them all.
        db = await database.connect(settings.database_url, pool_size=settings.postgres_pool_size)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            async with (
                background(db, settings, workers=count, housekeeping=False) as supervisor,
                worker_endpoint(db, settings, supervisor, metrics_host or settings.host, metrics_port),
            ):
                gc.freeze()  # and the --metrics-port server too, as background() froze the rest
                _say(settings, f"aichats worker: up to {count} turns at once on {db.dialect}")
                await stop.wait()
        finally:
            await db.close()

    # The event loop `serve` runs on (uvicorn's loop="uvloop"), not asyncio's own.
    uvloop.run(run())


@main.group("scheduler")
def scheduler_group() -> None:
    """Scheduled automation."""


@scheduler_group.command("tick")
@click.option("--at", "at", help="Run the pass as of this ISO 8601 instant (default: now).")
@click.option(
    "--next",
    "next_due",
    is_flag=True,
    help="Run the pass as of the instant the next active schedule is due: try a schedule out without waiting.",
)
@click.pass_context
def scheduler_tick(ctx: click.Context, at: str | None, next_due: bool) -> None:
    """Perform one scheduling pass: queue a turn for every schedule due; prints how many,
    and when nothing fired, when the next schedule is due."""
    from aichats.clock import parse_iso
    from aichats.scheduling import scheduler
    from aichats.services import schedules

    if at and next_due:
        raise click.UsageError("use --at or --next, not both")
    try:
        now = parse_iso(at) if at else None
    except ValueError:
        raise click.BadParameter("not an ISO 8601 instant", param_hint="--at") from None
    settings = _settings(ctx)

    async def run(db: Database) -> tuple[scheduler.Tick, int | None, int | None]:
        at_ms = await schedules.next_due(db) if next_due else now
        if next_due and at_ms is None:
            return scheduler.Tick(0, skipped_for_limit=False), None, None
        result = await scheduler.tick(
            db,
            max_in_flight=settings.schedule_max_in_flight,
            now=at_ms,
            batch_size=settings.scheduler_batch_size,
            budget=settings.token_budget_per_day,
        )
        return result, at_ms, (await schedules.next_due(db) if result.fired == 0 else None)

    result, as_of, following = _with_db(ctx, run)
    line = f"fired {result.fired}"
    if next_due and as_of is not None:
        line += f" as of {isoformat_ms(as_of)}"
    if result.skipped_for_limit:
        line += " (in-flight limit reached)"
    elif result.fired == 0:  # say why: a past --at, or nothing due yet
        line += f" (next schedule due at {isoformat_ms(following)})" if following else " (no active schedule)"
    click.echo(line)


@main.command("migrate")
@click.pass_context
def migrate_command(ctx: click.Context) -> None:
    """Apply database migrations and exit."""
    migrate.upgrade(_settings(ctx).database_url)
    click.echo("database is up to date")


@main.group("users")
def users_group() -> None:
    """Manage users."""


@users_group.command("create")
@click.option("--id", "user_id", help="The new user's id (user_...); random if left out.")
@click.option("--with-key", is_flag=True, help="Also create an API key for the user; prints it as the last line.")
@click.option("--scopes", help="With --with-key: the key's comma-separated permissions (default: all).")
@click.pass_context
def users_create(ctx: click.Context, user_id: str | None, with_key: bool, scopes: str | None) -> None:
    """Create a user; prints its id as the last line (with --with-key: the key's secret)."""
    if not with_key:
        if scopes is not None:
            raise click.UsageError("--scopes goes with --with-key (for an existing user: aichats keys create)")
        click.echo(_with_db(ctx, lambda db: users.create_user(db, user_id)))
        return
    wanted = _scopes_option(scopes)

    async def create(db: Database) -> tuple[str, keys.KeyInfo, str]:
        new_id = await users.create_user(db, user_id)
        return new_id, *await keys.create_key(db, new_id, wanted)

    new_id, info, secret = _with_db(ctx, create)
    settings = _settings(ctx)
    click.echo(f"created user {new_id}")
    click.echo(f"sign in at {_url(settings.host, settings.port)} (once aichats serve runs) with the key below")
    _show_key(info, secret)


@users_group.command("budget")
@click.argument("user_id")
@click.option("--tokens", type=click.IntRange(min=0), help="Blended tokens the user may use per UTC day.")
@click.option("--unlimited", is_flag=True, help="No daily limit for this user, whatever the default.")
@click.option("--default", "to_default", is_flag=True, help="Back to AICHATS_TOKEN_BUDGET_PER_DAY.")
@click.pass_context
def users_budget(ctx: click.Context, user_id: str, tokens: int | None, unlimited: bool, to_default: bool) -> None:
    """Show or set a user's daily token budget; prints the budget and today's usage.

    Every server process applies a change from its next request."""
    if (tokens is not None) + unlimited + to_default > 1:
        raise click.UsageError("give one of --tokens N, --unlimited or --default")
    default = _settings(ctx).token_budget_per_day

    async def run(db: Database) -> tuple[budgets.OwnBudget, budgets.Standing]:
        if tokens is not None or unlimited:
            await budgets.set_budget(db, user_id, tokens)
        elif to_default:
            await budgets.clear_budget(db, user_id)
        own = await budgets.own_budget(db, user_id)
        now = now_ms()
        return own, (await budgets.standings(db, [user_id], now=now, default=default))[user_id]

    own, standing = _with_db(ctx, run)
    limit = "no limit" if standing.budget is None else f"{standing.budget} blended tokens a day"
    source = "its own" if own.own else "the default, AICHATS_TOKEN_BUDGET_PER_DAY"
    click.echo(f"{user_id}: {limit} ({source})")
    over = " (over budget)" if standing.over else ""
    click.echo(f"used today (UTC): {decimal_tokens(standing.used_micros)}{over}")


def _scopes_option(scopes: str | None) -> tuple[str, ...]:
    try:
        return keys.parse_scopes(scopes)
    except ServiceError as error:
        raise click.BadParameter(error.message, param_hint="--scopes") from None


def _show_key(info: keys.KeyInfo, secret: str) -> None:
    """What ``keys create`` prints: the key's record, then its secret, once, as the last line."""
    click.echo(f"created {info.id} for {info.user_id} with scopes {','.join(info.scopes)}")
    click.echo("store this key now; it cannot be shown again:")
    click.echo(secret)


@main.group("keys")
def keys_group() -> None:
    """Manage API keys."""


@keys_group.command("create")
@click.option("--user", "user_id", required=True, help="The user the key acts for.")
@click.option(
    "--scopes",
    help=f"Comma-separated permissions (default: all of {','.join(keys.SCOPES)}).",
)
@click.pass_context
def keys_create(ctx: click.Context, user_id: str, scopes: str | None) -> None:
    """Create an API key; prints the key, once, as the last line."""
    wanted = _scopes_option(scopes)
    info, secret = _with_db(ctx, lambda db: keys.create_key(db, user_id, wanted))
    _show_key(info, secret)


@keys_group.command("list")
@click.option("--user", "user_id", required=True)
@click.pass_context
def keys_list(ctx: click.Context, user_id: str) -> None:
    """List a user's keys (never the secrets)."""
    for info in _with_db(ctx, lambda db: keys.list_keys(db, user_id)):
        state = "revoked " + isoformat_ms(info.revoked_at) if info.revoked_at else "active"
        click.echo(f"{info.id}\t{info.prefix}...\t{','.join(info.scopes)}\t{isoformat_ms(info.created_at)}\t{state}")


@keys_group.command("revoke")
@click.argument("key_id")
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke a key: requests with it fail from now on."""
    changed: Any = _with_db(ctx, lambda db: keys.revoke_key(db, key_id))
    click.echo(f"revoked {key_id}" if changed else f"{key_id} was already revoked")
