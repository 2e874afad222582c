"""Uploaded files: stored on local disk under ``AICHATS_FILES_DIR``, described in the database.

The bytes are written (to a temporary name, then renamed) before the row is committed,
so a row never points at a missing file; a crash in between leaves only an orphan
temporary file. Text files are inlined into the agent's context when attached.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, TypedDict, cast

import anyio.to_thread
import orjson
import sqlalchemy as sa

from aichats import ids
from aichats.clock import now_ms
from aichats.errors import Invalid, NotFound, PayloadTooLarge
from aichats.services.sql import json_texts
from aichats.storage.database import Connection, Database
from aichats.storage.schema import files

TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-yaml", "application/yaml")
ALLOWED_TYPES = (*TEXT_TYPES, "application/pdf", "image/png", "image/jpeg", "image/gif", "image/webp")
MAX_FILENAME = 255

_f = files.c
_INSERT = sa.insert(files).values(
    {c: sa.bindparam(c) for c in ("id", "user_id", "filename", "content_type", "size", "sha256", "created_at")}
)
_FILE_COLUMNS = (_f.id, _f.user_id, _f.filename, _f.content_type, _f.size, _f.created_at)
_GET = sa.select(*_FILE_COLUMNS).where(_f.id == sa.bindparam("file_id"), _f.user_id == sa.bindparam("user_id"))
_OWNED = sa.select(*_FILE_COLUMNS).where(_f.user_id == sa.bindparam("user_id"), _f.id.in_(json_texts("file_ids")))


class FileRow(TypedDict):
    """A file's description, as :func:`get_file` and :func:`owned_files` read it."""

    id: str
    user_id: str
    filename: str
    content_type: str
    size: int
    created_at: int


def is_text(content_type: str) -> bool:
    return content_type.startswith(TEXT_TYPES)


def _clean_type(content_type: str | None) -> str:
    if content_type is not None and "\x00" in content_type:  # as every text field: no NUL
        raise Invalid("the file's content type contains the NUL character, which text cannot hold")
    base = (content_type or "application/octet-stream").split(";", 1)[0].strip().lower()
    if not base.startswith(ALLOWED_TYPES):
        raise Invalid(f"files of type {base} are not accepted; send text, JSON, PDF or an image")
    return base


def _clean_name(filename: str | None) -> str:
    name = os.path.basename((filename or "").replace("\\", "/")).strip()
    if not name or not name.isprintable():
        raise Invalid("the upload needs a file name")
    return name[:MAX_FILENAME]


def path_of(files_dir: str, file_id: str) -> Path:
    return Path(files_dir) / file_id


def _store(target: Path, data: bytes) -> str:
    """Write ``data`` to ``target`` (a temporary name, then renamed) and return its SHA-256.
    Blocking: run it in a worker thread."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(".part")
    temporary.write_bytes(data)
    temporary.replace(target)
    return hashlib.sha256(data).hexdigest()


async def save_upload(
    db: Database,
    *,
    files_dir: str,
    max_bytes: int,
    user_id: str,
    filename: str | None,
    content_type: str | None,
    data: bytes,
) -> dict[str, Any]:
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"files are limited to {max_bytes} bytes")
    record: dict[str, Any] = {
        "id": ids.new_id(ids.FILE),
        "user_id": user_id,
        "filename": _clean_name(filename),
        "content_type": _clean_type(content_type),
        "size": len(data),
        "created_at": now_ms(),
    }
    target = path_of(files_dir, record["id"])
    # Hashing and writing 10 MB take tens of milliseconds: in a thread, not on the event loop.
    record["sha256"] = await anyio.to_thread.run_sync(_store, target, data)
    try:
        async with db.transaction() as tx:
            await tx.execute(_INSERT, record)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return record


async def get_file(db: Database, user_id: str, file_id: str) -> FileRow:
    row = await db.fetch_one(_GET, {"file_id": file_id, "user_id": user_id})
    if row is None:
        raise NotFound(f"no file {file_id}")
    return cast(FileRow, row)


async def owned_files(db: Database | Connection, user_id: str, file_ids: list[str]) -> dict[str, FileRow]:
    """The user's files among ``file_ids``, by id, in one query: the attachments of a
    message, or of a whole history. Ids that are not the user's files are left out."""
    if not file_ids:
        return {}
    rows = await db.fetch_all(_OWNED, {"user_id": user_id, "file_ids": orjson.dumps(file_ids).decode()})
    return {row["id"]: cast(FileRow, row) for row in rows}


def file_json(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "filename": row["filename"], "content_type": row["content_type"], "size": row["size"]}


def read_text(files_dir: str, row: FileRow, max_chars: int) -> str | None:
    """The file's text (cut at ``max_chars``), or None if it is not a text file or is gone from disk."""
    if not is_text(row["content_type"]):
        return None
    try:
        with open(path_of(files_dir, row["id"]), encoding="utf-8", errors="replace") as handle:
            text = handle.read(max_chars + 1)
    except FileNotFoundError:
        return None
    return text if len(text) <= max_chars else text[:max_chars] + "\n[... cut: the file is longer]"
