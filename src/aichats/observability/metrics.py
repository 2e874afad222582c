"""This process's metrics, counted in plain Python lists and turned into Prometheus
metrics only when ``/metrics`` is read.

Why not ``prometheus_client``'s own ``Histogram``: its ``labels(...).observe(...)`` takes a
lock and builds its label key on every call, about ten times what counting costs here
(``bench/metrics.py``; the API answers a ``retrieve`` in tens of microseconds, and every
request is counted). Here an observation is a dictionary lookup and two list increments,
on the event loop's one thread (no lock: everything that counts and the scrape that
reads run on that thread). At scrape time :class:`Collector` (a custom
collector, as ``prometheus_client`` supports them) hands the counts to
``prometheus_client``, which writes the text format.

The functions at the end (:func:`run_claimed`, :func:`timed_stream`,
:func:`schedules_fired`, :func:`webhook_attempt`) are what the workers, the scheduler and
the webhook sender call: one line each in their modules. Metric names and meanings are
in docs/metrics.md.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric

from aichats.agent.models import Usage
from aichats.clock import now_ms

T = TypeVar("T")
Labels = tuple[Any, ...]  # label values, in the family's label order (str() when written)

# Seconds. The API answers most calls in about a millisecond; streams open as fast.
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
TOKENS_PER_SECOND_BUCKETS = (1.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 250.0, 500.0, 1000.0)
LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class Histogram:
    """Observations by label values: per series ``[sum, count in each bucket..., count
    above the last bound]``. Buckets are kept apart (an observation touches one) and made
    cumulative when written."""

    __slots__ = ("bounds", "help", "labels", "name", "series")

    def __init__(self, name: str, help: str, labels: Sequence[str], bounds: Sequence[float]) -> None:
        self.name = name
        self.help = help
        self.labels = tuple(labels)
        self.bounds = tuple(bounds)
        self.series: dict[Labels, list[Any]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0.0] + [0] * (len(self.bounds) + 1)
        series[0] += value
        series[bisect_left(self.bounds, value) + 1] += 1  # the first bound >= value: Prometheus' "le"

    def family(self, series: dict[Labels, list[Any]]) -> Metric:
        family = HistogramMetricFamily(self.name, self.help, labels=self.labels)
        for labels, values in sorted(series.items(), key=_sort_key):
            buckets, total = [], 0
            for bound, count in zip((*self.bounds, float("inf")), values[1:], strict=True):
                total += count
                buckets.append((_bound(bound), total))
            family.add_metric([str(value) for value in labels], buckets, values[0])
        return family


class Counter:
    """A count by label values: per series ``[count]`` (a list, as a histogram's series, so
    that processes' snapshots add up the same way)."""

    __slots__ = ("help", "labels", "name", "series")

    def __init__(self, name: str, help: str, labels: Sequence[str]) -> None:
        self.name = name
        self.help = help
        self.labels = tuple(labels)
        self.series: dict[Labels, list[Any]] = {}

    def inc(self, labels: Labels, amount: float = 1) -> None:
        series = self.series.get(labels)
        if series is None:
            self.series[labels] = [amount]
        else:
            series[0] += amount

    def family(self, series: dict[Labels, list[Any]]) -> Metric:
        family = CounterMetricFamily(self.name, self.help, labels=self.labels)
        for labels, values in sorted(series.items(), key=_sort_key):
            family.add_metric([str(value) for value in labels], values[0])
        return family


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _sort_key(item: tuple[Labels, list[Any]]) -> tuple[str, ...]:
    return tuple(str(value) for value in item[0])


# ------------------------------------------------------------------ the process's metrics

HTTP_LABELS = ("route", "method", "status")
HTTP_REQUESTS = Histogram(
    "aichats_http_request_duration_seconds",
    "From a request's arrival at the app to its answer's status and headers sent, by route template, "
    "method and status.",
    HTTP_LABELS,
    HTTP_BUCKETS,
)
CLAIM_LATENCY = Histogram(
    "aichats_run_claim_latency_seconds",
    "From a run being queued to a worker claiming it (first attempts only).",
    (),
    WAIT_BUCKETS,
)
FIRST_TOKEN = Histogram(
    "aichats_model_first_token_seconds",
    "Time to first token: from a model call's start (retries included) to the first thing it streamed.",
    ("model",),
    FIRST_TOKEN_BUCKETS,
)
TOKENS_PER_SECOND = Histogram(
    "aichats_model_tokens_per_second",
    "Output tokens per second of each model call, from its first streamed token to its last.",
    ("model",),
    TOKENS_PER_SECOND_BUCKETS,
)
MODEL_CALLS = Counter(
    "aichats_model_calls_total", "Model calls, by model and outcome (ok, error, cancelled).", ("model", "outcome")
)
MODEL_TOKENS = Counter(
    "aichats_model_tokens_total", "Tokens the models read (input) and wrote (output).", ("model", "kind")
)
SCHEDULER_LAG = Histogram(
    "aichats_scheduler_lag_seconds",
    "How late scheduled turns fired: from a schedule's due instant to its message being written.",
    (),
    LAG_BUCKETS,
)
WEBHOOK_ATTEMPTS = Counter(
    "aichats_webhook_attempts_total",
    "Webhook delivery attempts, by result: delivered, retrying (failed, tried again later), failed (failed for good).",
    ("result",),
)

FAMILIES: tuple[Histogram | Counter, ...] = (
    HTTP_REQUESTS,
    CLAIM_LATENCY,
    FIRST_TOKEN,
    TOKENS_PER_SECOND,
    MODEL_CALLS,
    MODEL_TOKENS,
    SCHEDULER_LAG,
    WEBHOOK_ATTEMPTS,
)

Snapshot = dict[str, dict[Labels, list[Any]]]


def snapshot() -> Snapshot:
    """A copy of every family's series, by metric name (what another process adds to its own)."""
    return {family.name: {labels: list(values) for labels, values in family.series.items()} for family in FAMILIES}


def merged(snapshots: Iterable[Snapshot]) -> Snapshot:
    """The series of several processes added up, value by value."""
    total: Snapshot = {family.name: {} for family in FAMILIES}
    for one in snapshots:
        for name, series in one.items():
            into = total.get(name)
            if into is None:  # a family another version of aichats had
                continue
            for labels, values in series.items():
                kept = into.get(labels)
                if kept is None:
                    into[labels] = list(values)
                elif len(kept) == len(values):  # same buckets (always, within one version)
                    for index, value in enumerate(values):
                        kept[index] += value
    return total


class Collector:
    """A ``prometheus_client`` collector of the counted families, from a snapshot (this
    process's, or several processes' added up) and the gauges read for this scrape."""

    def __init__(self, counted: Snapshot, gauges: Iterable[Metric] = ()) -> None:
        self.counted = counted
        self.gauges = list(gauges)

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "aichats_http_requests", "HTTP requests answered, by route template, method and status.", labels=HTTP_LABELS
        )
        for labels, values in sorted(self.counted.get(HTTP_REQUESTS.name, {}).items(), key=_sort_key):
            requests.add_metric([str(value) for value in labels], sum(values[1:]))
        yield requests
        for family in FAMILIES:
            yield family.family(self.counted.get(family.name, {}))
        yield from self.gauges


# ------------------------------------------------------------------ what other modules call


def run_claimed(created_at_ms: int, attempt: int) -> None:
    """A worker claimed a run queued at ``created_at_ms``: its wait, on its first attempt
    (a retried run's wait includes its earlier attempts, which says nothing of the queue)."""
    if attempt <= 1:
        CLAIM_LATENCY.observe((), max(now_ms() - created_at_ms, 0) / 1000)


def schedules_fired(scheduled_for_ms: Iterable[int], fired_at_ms: int | None = None) -> None:
    """Schedules due at ``scheduled_for_ms`` fired: their messages were written at
    ``fired_at_ms`` (default: now)."""
    at = now_ms() if fired_at_ms is None else fired_at_ms
    for due in scheduled_for_ms:
        SCHEDULER_LAG.observe((), max(at - due, 0) / 1000)


def webhook_attempt(status: str) -> None:
    """A delivery attempt ended: ``delivered``, ``pending`` (to be retried) or ``failed`` (given up)."""
    WEBHOOK_ATTEMPTS.inc(("retrying" if status == "pending" else status,))


async def timed_stream(model: str, stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """``stream`` (a model call's items) as it is, timing it: its first item (time to first
    token), its last (tokens per second over the output tokens of the :class:`Usage` it
    ends with), its outcome (``ok``, ``error``, or ``cancelled``: the reply was stopped or
    its run lost mid-call) and its tokens. About 0.3 µs an item.
    """
    started = time.perf_counter()
    first = last = 0.0
    usage: Usage | None = None
    try:
        async for item in stream:
            if first == 0.0:
                first = time.perf_counter()
                FIRST_TOKEN.observe((model,), first - started)
            if isinstance(item, Usage):
                usage = item
            else:  # a token or a tool call
                last = time.perf_counter()
            yield item
    except Exception:
        MODEL_CALLS.inc((model, "error"))
        raise
    except BaseException:  # CancelledError, or GeneratorExit: the caller stopped reading
        MODEL_CALLS.inc((model, "cancelled"))
        raise
    MODEL_CALLS.inc((model, "ok"))
    if usage is not None:
        MODEL_TOKENS.inc((model, "input"), usage.input_tokens)
        MODEL_TOKENS.inc((model, "output"), usage.output_tokens)
        if usage.output_tokens > 1 and last > first:  # the tokens after the first, in the time they took
            TOKENS_PER_SECOND.observe((model,), (usage.output_tokens - 1) / (last - first))
