"""Schemathesis against the live server's own ``/openapi.json``, on both databases.

The document is the contract: every answer must be documented (its status and its
body), and no input, however odd (NUL characters included), may get a 5xx. Generation
is seeded and derandomized, with a bounded number of examples per operation and of
stateful steps (which chain the ids one answer gives to the next calls), so a run finds
the same things every time and takes well under a minute per database. It goes through
schemathesis' engine (what its CLI runs) rather than its pytest plugin, whose subtests
do not work with this pytest.
"""

from __future__ import annotations

import schemathesis
from schemathesis.engine import events, from_schema

from tests.support.accounts import Account
from tests.support.servers import LiveServer

SEED = 20261201
MAX_EXAMPLES = 100
CHECKS = ("not_a_server_error", "status_code_conformance", "response_schema_conformance")


def _config(live_server: LiveServer, account: Account) -> schemathesis.Config:
    """Seeded, NUL characters allowed, a fresh user's key on every request.

    Event streams never end: their requests read at most one event and give up after a
    second of silence, which schemathesis takes as a complete answer.
    """
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": live_server.api,
            "headers": {"Authorization": f"Bearer {account.key}"},
            "request-timeout": 10,
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "allow-x00": True,
                "database": "none",
            },
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            "phases": {"stateful": {"enabled": True, "max-steps": 20}},
            "operations": [{"include-path-regex": "/events$", "request-timeout": 1, "max-stream-events": 1}],
        }
    )


def _problems(event: events.EngineEvent) -> list[str]:
    """What ``event`` reports as wrong: each failed check with the request that made it fail."""
    if isinstance(event, events.ScenarioFinished):
        return [
            f"{event.recorder.label}: {node.failure_info.failure.title}\n"
            f"{node.failure_info.failure.message}\n{node.failure_info.code_sample}"
            for nodes in event.recorder.checks.values()
            for node in nodes
            if node.failure_info is not None
        ]
    if isinstance(event, events.NonFatalError):
        return [f"{event.label}: {event.value!r}"]
    if isinstance(event, events.FatalError):
        return [f"fatal: {event.exception!r}"]
    return []


def test_api_conforms_to_its_document(live_server: LiveServer, account: Account) -> None:
    schema = schemathesis.openapi.from_url(live_server.root + "/openapi.json", config=_config(live_server, account))
    problems: list[str] = []
    tested: set[str] = set()
    finished: events.EngineFinished | None = None
    for event in from_schema(schema).execute():
        problems.extend(_problems(event))
        if isinstance(event, events.ScenarioFinished) and event.recorder.interactions:
            tested.add(event.recorder.label)
        if isinstance(event, events.EngineFinished):
            finished = event
    unique = list(dict.fromkeys(problems))
    assert not unique, f"{len(unique)} problem(s):\n\n" + "\n\n".join(unique)
    # A run that tested nothing would pass too: every documented operation was called.
    assert finished is not None and finished.stop_reason == "completed"
    paths = schema.raw_schema["paths"]
    documented = {
        f"{method.upper()} {path}" for path, item in paths.items() for method in item if method != "parameters"
    }
    assert documented <= tested, documented - tested
