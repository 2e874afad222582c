"""Log lines as text or as JSON, each carrying the request or run it belongs to.

``AICHATS_LOG_FORMAT=json`` makes every line one JSON object (``time``, ``level``,
``logger``, ``message``, and ``request_id`` / ``run_id`` when there is one, ``exception``
with a traceback), for a log collector to index; ``text`` (the default) keeps the lines
people read in a terminal, with the ids appended.

The ids travel in context variables, so nothing passes them around: the request's is set
by :mod:`aichats.observability.requests` for everything that runs while serving it (the
500 handler's ``unhandled error`` line included), a run's by the worker for its turn's
task (:func:`run_context`). An asyncio task copies its creator's context, so a task a
request or a turn starts carries the same id.
"""

from __future__ import annotations

import contextvars
import logging
import logging.config
import os
from typing import Any, Literal

import orjson

from aichats.clock import isoformat_ms

LogFormat = Literal["text", "json"]

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("aichats_request_id", default=None)
run_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("aichats_run_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(ids)s"


def run_context(run: str) -> contextvars.Context:
    """A copy of the current context with ``run`` as its run id: give it to
    ``asyncio.create_task(..., context=...)`` and every line the task logs names the run,
    without the creating task's own context changing."""
    context = contextvars.copy_context()
    context.run(run_id.set, run)
    return context


class ContextIds(logging.Filter):
    """Copies the current request and run ids onto each record (``request_id``, ``run_id``,
    and ``ids``: the text format's `` [request_id=... run_id=...]`` suffix, or nothing)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request, run = request_id.get(), run_id.get()
        record.request_id, record.run_id = request, run
        parts = []
        if request is not None:
            parts.append(f"request_id={request}")
        if run is not None:
            parts.append(f"run_id={run}")
        record.ids = f" [{' '.join(parts)}]" if parts else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message or a traceback are
    escaped by JSON): what log collectors (Loki, Elasticsearch, CloudWatch...) parse."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": isoformat_ms(int(record.created * 1000)),  # UTC, milliseconds, as the API writes instants
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process or os.getpid(),
        }
        request, run = getattr(record, "request_id", None), getattr(record, "run_id", None)
        if request is None and run is None:  # a handler without the ContextIds filter
            request, run = request_id.get(), run_id.get()
        if request is not None:
            line["request_id"] = request
        if run is not None:
            line["run_id"] = run
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, http_version, status = record.args
            line.update(client=client, method=method, path=path, http_version=http_version, status=status)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


def logging_config(log_format: LogFormat) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of a process: uvicorn's loggers, aichats' (INFO and
    up) and everything else (WARNING and up: libraries' warnings), all in ``log_format``.

    Text keeps uvicorn's own lines as they were (``INFO:     ...``) and gives aichats'
    lines a time, level and logger. JSON makes every line, uvicorn's included, an object.
    It is also what ``aichats serve`` hands to uvicorn (``log_config``), so each of its
    ``--processes`` configures itself the same way.
    """
    ids = {"()": ContextIds}
    if log_format == "json":
        formatters: dict[str, Any] = {name: {"()": JsonFormatter} for name in ("default", "access", "aichats")}
    else:
        formatters = {
            "default": {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(message)s"},
            "access": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
            },
            "aichats": {"format": TEXT_FORMAT},
        }

    def handler(formatter: str, stream: str = "ext://sys.stderr") -> dict[str, Any]:
        return {"class": "logging.StreamHandler", "formatter": formatter, "stream": stream, "filters": ["ids"]}

    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"ids": ids},
        "formatters": formatters,
        "handlers": {
            "default": handler("default"),
            "access": handler("access", "ext://sys.stdout"),
            "aichats": handler("aichats"),
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "aichats": {"handlers": ["aichats"], "level": "INFO", "propagate": False},
        },
        "root": {"handlers": ["aichats"], "level": "WARNING"},
    }


def configure(log_format: LogFormat) -> None:
    """Configure this process's logging (``aichats worker``; ``serve`` goes through uvicorn)."""
    logging.config.dictConfig(logging_config(log_format))
