"""One set of metrics for all the processes of one ``aichats serve --processes N``.

The N processes share one listening socket, so a scrape reaches whichever the kernel
hands it to: each process answering with its own counts would make every series jump
between processes. Instead, each process writes a snapshot of its counts to a directory
they share every ``PUBLISH_SECONDS`` (a few kilobytes, written whole then renamed), and
the process that answers a scrape adds the others' latest snapshots to its own live
counts. Others' figures are thus up to a second old, which a scrape interval of 15 s or
more does not see.

A process that ends leaves its last snapshot in place: its counts stay in the sums, so
counters never go down when uvicorn replaces a process (a drop would read as a counter
reset to Prometheus). The directory is made by ``aichats serve`` when N > 1, named to the
processes in ``AICHATS_METRICS_SHARED_DIR``, and removed when it stops; a single process
(``--processes 1``, ``aichats worker``) has none and answers with its own counts.

Why not ``prometheus_client``'s multiprocess mode: it writes every observation to a
memory-mapped file under a lock (several microseconds a request), and it cannot add up
custom collectors, which is how this process's counts are kept (:mod:`.metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson

from aichats.observability import metrics

log = logging.getLogger("aichats.metrics")

SHARED_DIR_ENV = "AICHATS_METRICS_SHARED_DIR"
PUBLISH_SECONDS = 1.0
SUFFIX = ".metrics.json"


def shared_dir() -> Path | None:
    """The directory this process shares its counts in, if it is one of several."""
    value = os.environ.get(SHARED_DIR_ENV)
    return Path(value) if value else None


class Publisher:
    """Writes this process's snapshot to its own file in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # The pid says which process; the random part keeps a later process that gets the
        # same pid from overwriting (and so un-counting) an ended one's snapshot.
        self.path = directory / f"{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"

    def publish(self) -> None:
        encoded = orjson.dumps(
            {name: [[list(labels), values] for labels, values in series.items()]
             for name, series in metrics.snapshot().items()}
        )  # fmt: skip
        partial = self.path.with_suffix(".partial")
        partial.write_bytes(encoded)
        os.replace(partial, self.path)  # readers see the old snapshot or the new one, never half of one


def read_others(directory: Path, own: Path | None) -> list[metrics.Snapshot]:
    """Every other process's latest snapshot in ``directory`` (unreadable ones skipped)."""
    found: list[metrics.Snapshot] = []
    for path in directory.glob(f"*{SUFFIX}"):
        if path == own:
            continue
        try:
            raw = orjson.loads(path.read_bytes())
            found.append({name: {tuple(labels): values for labels, values in series} for name, series in raw.items()})
        except (OSError, ValueError, TypeError) as error:  # removed meanwhile, or not ours
            log.warning("metrics: skipping %s: %s", path.name, error)
    return found


_publisher: Publisher | None = None


def counted() -> tuple[metrics.Snapshot, int]:
    """What ``/metrics`` writes out: this process's counts, plus its siblings' when it has
    some; and how many processes that is (ended ones included)."""
    own = metrics.snapshot()
    directory = shared_dir()
    if directory is None:
        return own, 1
    others = read_others(directory, _publisher.path if _publisher else None)
    return metrics.merged([own, *others]), 1 + len(others)


@contextlib.asynccontextmanager
async def publishing() -> AsyncIterator[None]:
    """While in the block, publish this process's counts every ``PUBLISH_SECONDS`` (and a
    last time after it), when it is one of several processes; nothing otherwise."""
    global _publisher
    directory = shared_dir()
    if directory is None:
        yield
        return
    publisher = _publisher = Publisher(directory)

    async def loop() -> None:
        while True:
            try:
                publisher.publish()
            except OSError as error:
                log.warning("metrics: cannot write %s: %s", publisher.path, error)
            await asyncio.sleep(PUBLISH_SECONDS)

    task = asyncio.create_task(loop(), name="aichats-metrics-publisher")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait([task])
        with contextlib.suppress(OSError):
            publisher.publish()


@contextlib.contextmanager
def directory_for(processes: int) -> Iterator[None]:
    """For ``aichats serve --processes N``: with N > 1, a new directory for the N processes'
    snapshots, named to them in ``AICHATS_METRICS_SHARED_DIR`` (they inherit the
    environment) and removed after the block; with one process, none."""
    if processes <= 1:
        os.environ.pop(SHARED_DIR_ENV, None)
        yield
        return
    directory = tempfile.mkdtemp(prefix="aichats-metrics-")
    os.environ[SHARED_DIR_ENV] = directory
    try:
        yield
    finally:
        os.environ.pop(SHARED_DIR_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)
