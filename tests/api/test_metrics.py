"""``GET /metrics`` (issue 13, item 5): requests by route template, method and status with
their latency histograms, the database's gauges, the agent's, scheduler's and webhook
sender's figures; who may read it (loopback only, or a bearer token); one set of metrics
for all the processes of ``aichats serve --processes N``; ``aichats worker --metrics-port``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aichats.observability.middleware import route_label
from aichats.observability.routes import is_loopback, metrics_refusal
from aichats.observability.shared import SHARED_DIR_ENV
from tests.support.accounts import make_account
from tests.support.api import assert_error, create
from tests.support.servers import AICHATS, AppServer, LiveServer, free_port, serving, start_server, stop_server
from tests.support.waiting import wait_for
from tests.support.webhooks import Receiver

TOKEN = "metrics-token-0123456789abcdef"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape, by (name, labels); the text must parse as Prometheus' format."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def scrape(client: httpx2.Client, root: str) -> Samples:
    response = client.get(root + "/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return samples(response.text)


@pytest.fixture
def server(app_server: AppServer) -> AppServer:
    return app_server


@pytest.fixture
def client(app_server: AppServer) -> Iterator[httpx2.Client]:
    """A client of the in-process app from 127.0.0.1 (what ``httpx2.ASGITransport`` says)."""
    with httpx2.Client(base_url=app_server.root, transport=app_server.transport(), timeout=10) as client:
        yield client


# ------------------------------------------------------------------ what /metrics says


def test_requests_are_counted_by_route_template_method_and_status(
    app_server: AppServer, client: httpx2.Client, api: httpx2.Client
) -> None:
    chat = "/api/v1/ai_chats/{chat_id}"
    before = scrape(client, "")  # the counts are the process's: other tests' requests are in them too
    for n in range(3):
        assert api.get(f"/ai_chats/aich_missing{n}").status_code == 404
    create(api)
    create(api)
    assert api.put("/ai_chats").status_code == 405
    assert client.get("/no/such/path").status_code == 404
    after = scrape(client, "")

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("aichats_http_requests_total", route=chat, method="GET", status="404") == 3
    assert delta("aichats_http_request_duration_seconds_count", route=chat, method="GET", status="404") == 3
    assert delta("aichats_http_requests_total", route="/api/v1/ai_chats", method="POST", status="201") == 2
    assert delta("aichats_http_requests_total", route="/api/v1/ai_chats", method="PUT", status="405") == 1
    assert delta("aichats_http_requests_total", route="unmatched", method="GET", status="404") >= 1
    routes = {dict(labels).get("route") for _, labels in after}
    assert not any(route and ("aich_" in route or "/no/such" in route) for route in routes)  # templates, never ids

    # The histogram: cumulative buckets ending at +Inf, which is the count; a positive sum.
    labels = {"route": chat, "method": "GET", "status": "404"}
    buckets = sorted(
        (float(dict(key)["le"]), count)
        for (name, key), count in after.items()
        if name == "aichats_http_request_duration_seconds_bucket" and {k: v for k, v in key if k != "le"} == labels
    )
    assert [bound for bound, _ in buckets][:3] == [0.0005, 0.001, 0.0025] and buckets[-1][0] == float("inf")
    counts = [count for _, count in buckets]
    assert counts == sorted(counts) and counts[-1] == value(
        after, "aichats_http_request_duration_seconds_count", **labels
    )
    assert value(after, "aichats_http_request_duration_seconds_sum", **labels) > 0

    # The database's gauges: this test's database holds the two queued turns (no workers here).
    assert value(after, "aichats_database_up") == 1
    assert value(after, "aichats_runs_active", status="queued") == 2
    assert value(after, "aichats_runs_active", status="running") == 0
    assert value(after, "aichats_run_queue_oldest_seconds") > 0
    assert value(after, "aichats_schedules_due") == 0
    assert value(after, "aichats_webhook_deliveries_pending") == 0
    assert value(after, "process_resident_memory_bytes") > 0  # one process alone: its own figures


def test_route_labels_are_templates_without_convertors(app_server: AppServer) -> None:
    labels = {route_label(route) for route in app_server.app.routes}
    assert "/api/v1/ai_chats/{chat_id}/messages/{message_id}/retry" in labels
    assert "/static/{path}" in labels and "/metrics" in labels and "/readyz" in labels
    assert not any(":" in label for label in labels)  # no {chat_id:id}
    assert route_label(None) == "unmatched"


def test_every_answer_carries_a_request_id(client: httpx2.Client) -> None:
    generated = {client.get("/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(generated) == 3 and all(len(ident) == 16 and int(ident, 16) >= 0 for ident in generated)
    assert client.get("/healthz", headers={"X-Request-Id": "lb-7f3a:9.2"}).headers["x-request-id"] == "lb-7f3a:9.2"
    for insane in ("x" * 129, "two words", "semi;colon", ""):
        answered = client.get("/healthz", headers={"X-Request-Id": insane}).headers["x-request-id"]
        assert answered != insane and len(answered) == 16
    errored = client.get("/api/v1/ai_chats", headers={"X-Request-Id": "req-401"})  # no key: an error answer
    assert errored.status_code == 401 and errored.headers["x-request-id"] == "req-401"


# ------------------------------------------------------------------ who may read it


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_clients_may_read_without_a_token(host: str) -> None:
    assert is_loopback(host)
    assert metrics_refusal(host, None, None) is None


@pytest.mark.parametrize(
    "host", ["10.0.0.1", "192.168.1.2", "203.0.113.9", "::ffff:10.0.0.1", "2001:db8::1", "fe80::1", "", None, "abc"]
)
def test_other_clients_are_refused_without_a_token(host: str | None) -> None:
    refusal = metrics_refusal(host, f"Bearer {TOKEN}", None)  # a token means nothing while none is set
    assert refusal is not None and refusal.status == 403 and "AICHATS_METRICS_TOKEN" in refusal.message


@pytest.mark.parametrize("host", ["127.0.0.1", "203.0.113.9", None])
def test_with_a_token_every_client_must_present_it(host: str | None) -> None:
    for authorization in (None, "", "Bearer", f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", TOKEN):
        refusal = metrics_refusal(host, authorization, TOKEN)
        assert refusal is not None and refusal.status == 401, authorization
        assert refusal.headers == {"WWW-Authenticate": 'Bearer realm="aichats-metrics"'}
    for authorization in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"Bearer  {TOKEN} "):
        assert metrics_refusal(host, authorization, TOKEN) is None, authorization


def test_a_real_server_answers_loopback_and_refuses_a_forwarded_client(live_server: LiveServer) -> None:
    """uvicorn trusts a proxy on 127.0.0.1 (``FORWARDED_ALLOW_IPS``): its ``X-Forwarded-For``
    is the client, so a request a local proxy forwards from elsewhere is not loopback."""
    assert samples(httpx2.get(live_server.root + "/metrics").text)  # from 127.0.0.1
    forwarded = httpx2.get(live_server.root + "/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert_error(forwarded, 403, "forbidden", "AICHATS_METRICS_TOKEN")
    assert "x-request-id" in forwarded.headers


def test_a_real_server_with_a_token_requires_it(database_url: str, tmp_path: Path) -> None:
    with serving(database_url, tmp_path, {"AICHATS_WORKERS": "0", "AICHATS_METRICS_TOKEN": TOKEN}) as server:
        url = server.root + "/metrics"
        missing = httpx2.get(url)
        assert_error(missing, 401, "unauthorized", "Bearer")
        assert missing.headers["www-authenticate"] == 'Bearer realm="aichats-metrics"'
        assert_error(httpx2.get(url, headers={"Authorization": "Bearer wrong-token-0123456789"}), 401, "unauthorized")
        answer = httpx2.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200 and value(samples(answer.text), "aichats_database_up") == 1
        # The API's keys are not the metrics token, and the token is not an API key.
        assert httpx2.get(server.api + "/ai_chats", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401


def test_the_token_is_at_least_16_characters(database_url: str) -> None:
    env = {**os.environ, "AICHATS_DATABASE_URL": database_url, "AICHATS_METRICS_TOKEN": "short"}
    result = subprocess.run(
        [AICHATS, "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0 and "metrics_token" in result.stderr


# ------------------------------------------------------------------ several processes, and workers


def test_the_processes_of_one_serve_answer_with_one_set_of_metrics(database_url: str, tmp_path: Path) -> None:
    """Whichever of the two processes answers a scrape, it counts both processes' requests."""
    port = free_port()
    env = {**os.environ, "AICHATS_DATABASE_URL": database_url, "AICHATS_WORKERS": "0"}
    env.pop(SHARED_DIR_ENV, None)
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [AICHATS, "serve", "--port", str(port), "--processes", "2"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    root = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: log_path.read_text().count("Application startup complete") == 2, 60, "two processes")
        route = {"route": "/api/v1/ai_chats/{chat_id}", "method": "GET", "status": "401"}
        for n in range(40):  # a new connection each: the kernel hands them to either process
            assert httpx2.get(f"{root}/api/v1/ai_chats/aich_{n}").status_code == 401
        time.sleep(1.5)  # each process publishes its counts every second
        for _ in range(8):
            found = samples(httpx2.get(root + "/metrics").text)
            assert value(found, "aichats_http_requests_total", **route) == 40
            assert value(found, "aichats_metrics_processes") == 2
            assert value(found, "process_resident_memory_bytes") == 0  # per process: left out of the sums
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    assert "metrics: " not in log_path.read_text()  # no snapshot failed to be written or read


def test_a_worker_serves_metrics_and_readiness_on_its_own_port(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "AICHATS_DATABASE_URL": database_url,
        "AICHATS_MODEL": "test:echo",
        "AICHATS_LOG_FORMAT": "json",
    }
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [AICHATS, "worker", "--metrics-port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    root = f"http://127.0.0.1:{port}"
    try:

        def ready() -> httpx2.Response | None:
            assert process.poll() is None, log_path.read_text()
            try:
                return httpx2.get(root + "/readyz")
            except httpx2.TransportError:
                return None

        answer = wait_for(ready, 30, "the worker's endpoint")
        assert answer.status_code == 200, answer.text
        assert {"worker", "scheduler", "webhooks"} <= set(answer.json()["services"])
        assert httpx2.get(root + "/healthz").json() == {"status": "ok"}
        found = samples(httpx2.get(root + "/metrics").text)
        assert value(found, "aichats_database_up") == 1 and value(found, "process_open_fds") > 0
        assert_error(httpx2.get(root + "/nothing"), 404, "not_found")
        assert_error(httpx2.get(root + "/metrics", headers={"X-Forwarded-For": "203.0.113.9"}), 403, "forbidden")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log_path.read_text()  # the endpoint does not keep it from stopping
    events = [json.loads(line) for line in log_path.read_text().splitlines()]  # JSON lines only, its own too
    assert any(event["message"].startswith("aichats worker: ") for event in events)


# ------------------------------------------------------------------ the agent, scheduler and webhooks


@pytest.fixture(scope="module")
def agent_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("agent")
    env = {
        "AICHATS_MODEL": "test:echo",
        "AICHATS_FILES_DIR": str(directory / "files"),
        "AICHATS_WEBHOOKS_ALLOW_PRIVATE_URLS": "true",
    }
    server = start_server(new_database(), directory / "serve.log", env)
    yield server
    stop_server(server)


def test_turns_schedules_and_webhooks_are_measured(agent_server: LiveServer) -> None:
    receiver = Receiver()
    account = make_account(agent_server.database_url)
    root = agent_server.root
    try:
        with httpx2.Client(base_url=agent_server.api, headers=account.headers, timeout=10) as api:
            before = samples(httpx2.get(root + "/metrics").text)
            hook = api.post("/webhooks", json={"url": receiver.url, "events": ["ai_chat.message.completed"]})
            assert hook.status_code == 201, hook.text
            chat = create(api, message_text="count these five words")
            wait_for(lambda: len(receiver.received) >= 1, 30, "the reply's webhook")
            at = time.time() + 1.5
            iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"
            schedule = api.put(
                f"/ai_chats/{chat['id']}/schedule", json={"prompt": "again", "timezone": "UTC", "run_at": iso}
            )
            assert schedule.status_code in (200, 201), schedule.text
            wait_for(lambda: len(receiver.received) >= 2, 30, "the scheduled turn's webhook")

            def measured() -> Samples | None:
                found = samples(httpx2.get(root + "/metrics").text)
                done = value(found, "aichats_webhook_attempts_total", result="delivered") - value(
                    before, "aichats_webhook_attempts_total", result="delivered"
                )
                return found if done >= 2 else None  # the attempt is counted once it is recorded

            after = wait_for(measured, 10, "the deliveries counted")
    finally:
        receiver.server.shutdown()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    model = {"model": "test:echo"}
    assert delta("aichats_model_first_token_seconds_count", **model) == 2  # the chat's turn and the scheduled one
    assert delta("aichats_model_calls_total", outcome="ok", **model) == 2
    # test:echo answers "You said: <text>", a token a word: 6 + 3 words.
    assert delta("aichats_model_tokens_total", kind="output", **model) == 9
    assert delta("aichats_model_tokens_total", kind="input", **model) > 10
    assert delta("aichats_model_tokens_per_second_count", **model) == 2
    assert delta("aichats_run_claim_latency_seconds_count") == 2
    assert delta("aichats_scheduler_lag_seconds_count") == 1
    assert 0 <= delta("aichats_scheduler_lag_seconds_sum") < 5  # fired within a few scheduler passes
    assert value(after, "aichats_runs_active", status="queued") == 0
    assert value(after, "aichats_webhook_deliveries_pending") == 0


def test_a_worker_whose_metrics_port_is_taken_says_so(database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "AICHATS_DATABASE_URL": database_url, "AICHATS_MODEL": "test:echo"}
        result = subprocess.run(
            [AICHATS, "worker", "--metrics-port", str(port)], env=env, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1
    assert f"cannot serve --metrics-port on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


def test_snapshots_of_other_processes_add_up_and_broken_ones_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aichats.observability import metrics, shared

    monkeypatch.setenv(SHARED_DIR_ENV, str(tmp_path))
    metrics.WEBHOOK_ATTEMPTS.inc(("delivered",))
    metrics.HTTP_REQUESTS.observe(("/api/v1/ai_chats", "GET", 200), 0.003)  # a histogram to add up too
    sibling = shared.Publisher(tmp_path)  # what another process of the same serve wrote
    sibling.publish()
    (tmp_path / f"999-0000{shared.SUFFIX}").write_text("{not json")  # torn or foreign: skipped
    own = metrics.snapshot()
    counted, processes = shared.counted()
    assert processes == 2
    name = metrics.WEBHOOK_ATTEMPTS.name
    assert counted[name][("delivered",)] == [2 * own[name][("delivered",)][0]]
    http = metrics.HTTP_REQUESTS.name
    assert own[http]
    for labels, values in own[http].items():
        assert counted[http][labels] == [2 * value for value in values]  # sums and every bucket
