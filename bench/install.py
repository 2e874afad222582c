"""Benchmark the first install, as a new user meets it, with an empty pip cache.

Usage (from the repository root)::

    .venv/bin/python bench/install.py

1. **Plain pip**: ``pip install .`` of a fresh copy of this checkout (``git clone``)
   into a fresh venv, with an empty pip cache. Timed; pip's log is read for any package
   it built from source (anything but aichats itself is a failure).
2. **Quick start**: in another fresh copy, with another empty cache, the README's first
   command, ``./scripts/serve`` (on a free port), timed until ``GET /`` serves the web
   app's page; then one chat is created and its reply from the built-in model awaited.

Targets: plain pip at most 120 s, the quick start at most 90 s to the served page.
Exit status 0 when both are met and nothing was built from source.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from common import BenchError, free_port, log_tail, run_bench, stop

ROOT = Path(__file__).resolve().parent.parent
PIP_SECONDS = 120
SERVE_SECONDS = 90
BUILT = re.compile(r"Building wheel for (\S+)")


def fresh_copy(workdir: Path, name: str) -> Path:
    """A clone of this checkout's committed state, as a new user would download it."""
    target = workdir / name
    subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True)
    return target


def empty_cache_env(workdir: Path, name: str) -> dict[str, str]:
    cache = workdir / f"pip-cache-{name}"
    cache.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AICHATS_", "VIRTUAL_ENV"))}
    return {**env, "PIP_CACHE_DIR": str(cache), "PIP_NO_CACHE_DIR": "", "PYTHONDONTWRITEBYTECODE": ""}


def built_from_source(log: str) -> list[str]:
    return sorted({name for name in BUILT.findall(log) if name != "aichats"})


def plain_pip(workdir: Path) -> tuple[float, list[str]]:
    source = fresh_copy(workdir, "plain")
    env = empty_cache_env(workdir, "plain")
    venv = workdir / "plain-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    started = time.perf_counter()
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", str(source)],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"pip install . failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    (workdir / "plain-pip.log").write_text(done.stdout + done.stderr)
    return seconds, built_from_source(done.stdout + done.stderr)


def get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def api(url: str, key: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def quick_start(workdir: Path) -> tuple[float, float, list[str], str]:
    """Seconds to the served page; to the first reply after it; source builds; the reply."""
    source = fresh_copy(workdir, "quick")
    env = empty_cache_env(workdir, "quick")
    port = free_port()
    log = workdir / "quick-serve.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [str(source / "scripts" / "serve"), "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=source,
        )
    started = time.perf_counter()
    root = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise BenchError(f"scripts/serve exited with {process.returncode}:\n{log_tail(log)}")
            try:
                if b"<html" in get(root + "/").lower():
                    break
            except OSError:
                pass
            if time.perf_counter() - started > 600:
                raise BenchError("no page after 10 minutes")
            time.sleep(0.2)
        served = time.perf_counter() - started
        print(f"   page served after {served:.1f} s (target {SERVE_SECONDS} s)", flush=True)
        key = subprocess.run(
            [str(source / ".venv" / "bin" / "aichats"), "users", "create", "--with-key"],
            cwd=source,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()[-1]
        asked = time.perf_counter()
        chat = api(root + "/api/v1/ai_chats", key, {"message_text": "What is the capital of France?"})
        while True:
            messages = api(f"{root}/api/v1/ai_chats/{chat['id']}/messages", key)["data"]
            if messages[-1]["status"] in ("completed", "failed"):
                break
            if time.perf_counter() - asked > 60:
                raise BenchError(f"no reply within 60 s: {messages[-1]}\n{log_tail(log)}")
            time.sleep(0.1)
        reply = messages[-1]
        if reply["status"] != "completed":
            raise BenchError(f"the first reply failed: {reply['error']}")
        return served, time.perf_counter() - asked, built_from_source(log.read_text()), reply["content"]
    finally:
        stop(process)


def run(workdir: Path) -> int:
    print("1. pip install . (fresh venv, empty pip cache)", flush=True)
    pip_seconds, pip_built = plain_pip(workdir)
    print(f"   {pip_seconds:.1f} s (target {PIP_SECONDS} s); built from source: {', '.join(pip_built) or 'nothing'}")
    print("2. ./scripts/serve (fresh clone, empty pip cache), until GET / serves the web app", flush=True)
    served, replied, serve_built, reply = quick_start(workdir)
    print(f"   built from source: {', '.join(serve_built) or 'nothing'}")
    print(f"   then the first reply of the built-in model in {replied:.2f} s: {reply[:80]!r}")
    met = pip_seconds <= PIP_SECONDS and served <= SERVE_SECONDS and not pip_built and not serve_built
    print(f"targets: {'met' if met else 'NOT MET'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(run_bench("install", run, "temporary clones, venvs and caches removed"))
