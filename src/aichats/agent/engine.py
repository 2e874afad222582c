"""The local engine's supervisor: one child process per GGUF file, restarted when it ends.

The local model runs in :mod:`aichats.agent.engine_process`, a child process, never in
the process that serves the API: a fault in llama.cpp (a CPU instruction this machine
refuses, memory exhausted, a ``kill -9``) ends the child, and the API keeps answering.
The supervisor notices the exit, says why in the log (``killed by SIGKILL``) and starts
a fresh engine at once (backing off when it keeps dying young). A reply waiting for the
engine waits for the fresh one; a reply cut off mid-stream fails, naming the cause.

The child is started in its own session (a Ctrl-C in the terminal reaches only the
parent, which then stops it) and exits when its standard input closes, so it never
outlives the parent, even one killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
import sys
import time
from dataclasses import dataclass

from aichats.agent.models import ModelError

log = logging.getLogger("aichats.engine")

FIRST_RESTART_SECONDS = 0.2  # a crash is restarted at once; repeated early deaths back off
MAX_RESTART_SECONDS = 30.0
HEALTHY_SECONDS = 30.0  # an engine that ran this long before dying is restarted at once again
STDERR_LINES = 20  # the engine's last log lines, quoted when it fails to start


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How the engine runs a model: slots decoded at once, tokens of context per slot, threads,
    and whether to use our ChatML template with tools instead of the model's own
    (:data:`aichats.agent.engine_process.CHATML_TOOLS`)."""

    parallel: int = 4
    context_tokens: int = 4096
    threads: int | None = None
    chatml_tools: bool = False


def describe_exit(returncode: int) -> str:
    """``-9`` -> ``"killed by SIGKILL"``, ``1`` -> ``"exited with status 1"``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


class Engine:
    """A supervised engine process serving one GGUF file over loopback HTTP."""

    def __init__(self, path: str, options: EngineOptions) -> None:
        self.path = path
        self.options = options
        self.starts = 0  # engines started so far; each restart adds one
        self.last_exit: str | None = None  # why the previous engine ended
        self.pid: int | None = None
        self._address: str | None = None
        self._failure: str | None = None  # why the latest engine could not load its model
        self._changed = asyncio.Event()  # set (and replaced) on every change of state
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)

    def start(self) -> None:
        """Start supervising (idempotent); the model loads in the background."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._supervise(), name="aichats-local-engine")

    @property
    def address(self) -> str | None:
        """The engine's base URL while one is up and loaded, else None."""
        return self._address

    async def ready(self, timeout: float) -> str:
        """The base URL of a running engine, waiting up to ``timeout`` seconds for one."""
        self.start()
        deadline = time.monotonic() + timeout
        while self._address is None:
            if self._failure is not None:
                raise ModelError(self._failure, transient=False)
            changed = self._changed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ModelError(f"the local engine did not start within {timeout:g} s", transient=False)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await changed.wait()
        return self._address

    def _signal_change(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _supervise(self) -> None:
        delay = FIRST_RESTART_SECONDS
        while not self._closed:
            began = time.monotonic()
            loaded = await self._run_once()
            if self._closed:
                return
            lived = time.monotonic() - began
            delay = FIRST_RESTART_SECONDS if loaded and lived > HEALTHY_SECONDS else min(delay * 2, MAX_RESTART_SECONDS)
            await asyncio.sleep(delay)

    async def _run_once(self) -> bool:
        """Run one engine until it ends; True if it had loaded its model."""
        options = self.options
        command = [
            sys.executable, "-m", "aichats.agent.engine_process", "--model", self.path,
            "--parallel", str(options.parallel), "--context", str(options.context_tokens),
        ]  # fmt: skip
        if options.threads:
            command += ["--threads", str(options.threads)]
        if options.chatml_tools:
            command.append("--chatml-tools")
        self._stderr.clear()
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as error:
            self._fail(f"the local engine could not be started: {error}")
            return False
        self._process = process
        self.pid = process.pid
        self.starts += 1
        relay = asyncio.create_task(self._relay(process))
        loaded = False
        assert process.stdout is not None
        while line := (await process.stdout.readline()).decode(errors="replace"):
            if line.startswith("READY "):
                break
            log.info("engine: %s", line.rstrip())
        if line.startswith("READY "):
            loaded = True
            self._address = line.removeprefix("READY ").strip()
            self._failure = None
            log.info("local engine %d serves %s at %s", process.pid, self.path, self._address)
            self._signal_change()
        returncode = await process.wait()
        await relay
        self._address = None
        self._process = None
        self.last_exit = describe_exit(returncode)
        if self._closed:
            return loaded
        if loaded:
            log.warning("local engine %d %s; starting a new one", process.pid, self.last_exit)
            self._signal_change()
        else:
            said = "; ".join(self._stderr) or "it printed nothing"
            self._fail(f"the local engine could not load the model {self.path} ({self.last_exit}): {said}")
        return loaded

    def _fail(self, message: str) -> None:
        log.error("%s", message)
        self._failure = message
        self._signal_change()

    async def _relay(self, process: asyncio.subprocess.Process) -> None:
        """The engine's log lines go to ours (and the last few are kept, for errors)."""
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._stderr.append(line)
                log.warning("engine: %s", line)

    def kill(self) -> None:
        """SIGKILL the running engine (tests and operators: the supervisor restarts it)."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()

    async def close(self) -> None:
        """Stop the engine: close its standard input (it exits), then kill it if it lingers."""
        self._closed = True
        process = self._process
        if process is not None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                self.kill()
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
