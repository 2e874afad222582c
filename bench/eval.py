"""Evaluate the local model: 20 support-style prompts with machine-checkable answers.

Usage (from the repository root)::

    .venv/bin/python bench/eval.py [--model PATH.gguf ...] [--runs N] [--long]

For each GGUF file (default: the built-in SmolLM2-135M-Instruct), one engine process
(``python -m aichats.agent.engine_process``, as :mod:`aichats.agent.engine` starts it)
serves every sampling config in turn:

* ``before``: the sampling the old engine used (temperature 0.6, top_p 0.9, top_k 40,
  repeat_penalty 1.1);
* ``after``: the current defaults, ``aichats.config.Settings().local_*`` (an
  ``AICHATS_LOCAL_*`` variable in the environment changes this row);
* a few alternatives (temperature 0 and 0.2, repeat_penalty 1.0, 1.05 and 1.1, those
  not already a row), so that a default can be picked (``--no-extra`` skips them).

Each prompt is sent with the ``support`` agent's system prompt, at most 128 tokens, four
at a time (the engine's parallel slots). A config with temperature > 0 is run ``--runs``
times (seeds 1..N) and scored by its mean; a greedy one once. Every answer is checked by
a small function (a regex, case- and accent-insensitive, tolerant of surrounding words).
``--long`` adds 8 open questions per config, at most 512 tokens, and counts the replies
that run to the limit and how much of each repeats itself (a loop).

See ``bench/README.md`` for what the figures mean. The engine is stopped at the end, on
failure or Ctrl-C too. Exit status: 0 when every reply came back (whatever the scores),
1 when something broke (the engine did not start, a request failed).
"""

from __future__ import annotations

import argparse
import re
import selectors
import statistics
import subprocess
import sys
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
from common import BenchError, aichats_env, log_tail, run_bench, warn_if_busy

from aichats.agent.models.local import model_path
from aichats.config import Settings

MAX_TOKENS = 128
READY_TIMEOUT = 120.0  # seconds for the engine to load a model
REPLY_TIMEOUT = 300.0  # seconds for one reply (a busy 2-core machine is slow, not broken)


# ------------------------------------------------------------------ checks


def normalized(text: str) -> str:
    """Case-folded, accents stripped (``Buenos Días`` -> ``buenos dias``), whitespace collapsed."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(char for char in decomposed if not unicodedata.combining(char))
    return re.sub(r"\s+", " ", plain.casefold())


def number(value: int, *words: str) -> Callable[[str], bool]:
    """The number appears on its own: ``4730`` also as ``4,730`` or ``4730.00``, not inside
    ``14730``, ``4730.5``, ``4730%`` or ``8:00``; or one of ``words`` (``eight``)."""
    digits = str(value)
    cut = len(digits) % 3 or 3
    grouped = digits[:cut] + "".join(f",?{digits[i : i + 3]}" for i in range(cut, len(digits), 3))
    pattern = re.compile(rf"(?<![\d.,:]){grouped}(?:\.0+)?(?![.,]?\d|\s*%|:\d)")
    word = re.compile(rf"\b(?:{'|'.join(words)})\b") if words else None

    def check(reply: str) -> bool:
        text = normalized(reply)
        return bool(pattern.search(text) or (word and word.search(text)))

    return check


def matches(pattern: str) -> Callable[[str], bool]:
    """A regex found anywhere in the normalized reply (lower case, no accents)."""
    compiled = re.compile(pattern)
    return lambda reply: bool(compiled.search(normalized(reply)))


def first_of(pattern: str, *expected: str) -> Callable[[str], bool]:
    """The first match of ``pattern`` (its first non-empty group) is one of ``expected``:
    the reply's answer, not a later "but no, ..." or a recap of every option."""
    compiled = re.compile(pattern)

    def check(reply: str) -> bool:
        found = compiled.search(normalized(reply))
        return bool(found) and next(group for group in found.groups() if group) in expected

    return check


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str
    expected: str  # what the check looks for, for the table
    check: Callable[[str], bool]


REVENUE = "Weekly revenue of our shop: week 1 $1,200; week 2 $950; week 3 $1,480; week 4 $1,100."
YES_NO = r"\b(yes|no)\b"
WEEK = r"\bweek\s*#?(\d)\b|\b(first|second|third|fourth)\s+week\b"

PROMPTS: tuple[Prompt, ...] = (
    Prompt("mul", "What is 17*23?", "391", number(391)),
    Prompt("div", "What is 96 divided by 8?", "12", number(12, "twelve")),
    Prompt("add", "What is 250 + 175?", "425", number(425)),
    Prompt("sub", "What is 1000 - 365?", "635", number(635)),
    Prompt("percent", "What is 15% of 200?", "30", number(30, "thirty")),
    Prompt("order total", "A customer buys 3 licenses at $12 each. How much do they pay in total?", "36", number(36)),
    Prompt("french", "How do you say 'good morning' in French?", "bonjour", matches(r"\bbonjour\b")),
    Prompt("spanish", "How do you say 'good morning' in Spanish?", "buenos dias", matches(r"\bbuenos\s+dias\b")),
    Prompt(
        "cron",
        "Write a cron expression that runs a job every Monday at 9:00.",
        "0 9 * * 1",
        matches(r"(?<![\w*/,-])0{1,2}\s+0?9\s+\*\s+\*\s+(?:1|mon)(?![\w*/,-])"),
    ),
    Prompt("best week", f"{REVENUE} Which week had the highest revenue?", "week 3 first", first_of(WEEK, "3", "third")),
    Prompt("total", f"{REVENUE} What was the total revenue of the four weeks?", "4,730", number(4730)),
    Prompt("australia", "What is the capital of Australia?", "canberra", matches(r"\bcanberra\b")),
    Prompt("canada", "What is the capital of Canada?", "ottawa", matches(r"\bottawa\b")),
    Prompt("cm", "How many centimeters are in 2.5 meters?", "250", number(250)),
    Prompt("grams", "How many grams are in 3 kilograms?", "3,000", number(3000)),
    Prompt(
        "pacific", "Is the Pacific the largest ocean on Earth? Answer yes or no.", "yes first", first_of(YES_NO, "yes")
    ),
    Prompt("sun", "Is the Sun a planet? Answer yes or no.", "no first", first_of(YES_NO, "no")),
    Prompt(
        "date",
        "Extract the date from this sentence: 'Your refund was issued on March 14, 2026 and should arrive within "
        "five business days.'",
        "March 14, 2026",
        matches(r"march\s+14(?:st|th)?,?\s+2026|14(?:th)?\s+(?:of\s+)?march,?\s+2026|2026-03-14|\b0?3/14/2026"),
    ),
    Prompt(
        "email",
        "What is the email address in this message: 'Hello, this is Jane Doe. Please send the invoice to "
        "jane.doe@example.com before Friday.'",
        "jane.doe@example.com",
        matches(r"(?<![\w.+-])jane\.doe@example\.com(?![\w-])"),
    ),
    Prompt(
        "hours",
        "Our support desk is open from 9:00 to 17:00. How many hours a day is it open?",
        "8",
        number(8, "eight"),
    ),
)
assert len(PROMPTS) == 20

# --long: open questions with no one answer, to see whether long replies loop.
LONG_PROMPTS = (
    "How do I reset my password?",
    "My invoice shows a charge I don't recognise. What should I do?",
    "Explain how to export my chat history.",
    "Write a short apology email to a customer whose order arrived late.",
    "What are some tips to keep my account secure?",
    "Describe the steps to cancel a subscription.",
    "Why is the app slow on my phone?",
    "Tell me about your refund policy.",
)
LONG_MAX_TOKENS = 512


def repeated_4grams(text: str) -> float:
    """Share of the reply's word 4-grams that occur earlier in it: 0 for fresh text, near 1 for a loop."""
    words = re.findall(r"\w+", text.casefold())
    grams = [tuple(words[i : i + 4]) for i in range(len(words) - 3)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


# ------------------------------------------------------------------ configs


@dataclass(frozen=True)
class Config:
    name: str
    note: str
    temperature: float
    top_p: float
    top_k: int
    repeat_penalty: float

    @property
    def sampled(self) -> bool:
        return self.temperature > 0

    def body(self, seed: int) -> dict[str, float | int]:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repeat_penalty": self.repeat_penalty,
            "seed": seed,
        }


def configs(settings: Settings, extra: bool) -> list[Config]:
    """before, after, then the alternatives that are not already a row (after may be one)."""
    now = dict(top_p=settings.local_top_p, top_k=settings.local_top_k)
    penalty = settings.local_repeat_penalty
    chosen = [
        Config("before", "old engine", 0.6, 0.9, 40, 1.1),
        Config("after", "Settings()", settings.local_temperature, repeat_penalty=penalty, **now),
    ]
    if extra:
        for temperature, repeat_penalty in ((0.2, penalty), (0.0, 1.0), (0.0, 1.05), (0.0, 1.1), (0.2, 1.0)):
            config = Config(
                f"t{temperature:g} rp{repeat_penalty:.2f}".removesuffix("0"), "alternative", temperature,
                repeat_penalty=repeat_penalty, **now,
            )  # fmt: skip
            if all(config.body(0) != other.body(0) for other in chosen):
                chosen.append(config)
    return chosen


# ------------------------------------------------------------------ engine


@contextmanager
def engine(path: str, workdir: Path, parallel: int, threads: int | None) -> Iterator[tuple[str, float]]:
    """``python -m aichats.agent.engine_process`` on ``path``; yields (base URL, load seconds).
    Stopped on the way out by closing its standard input (killed if it lingers)."""
    argv = [sys.executable, "-m", "aichats.agent.engine_process", "--model", path, "--parallel", str(parallel)]
    if threads:
        argv += ["--threads", str(threads)]
    log = workdir / f"engine-{Path(path).stem}.log"
    started = time.perf_counter()
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=aichats_env(),
            start_new_session=True,  # a Ctrl-C reaches only us; we stop it
        )  # fmt: skip
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(READY_TIMEOUT):
                raise BenchError(f"the engine did not load {path} within {READY_TIMEOUT:.0f} s:\n{log_tail(log)}")
        line = process.stdout.readline().decode(errors="replace").strip()
        if not line.startswith("READY "):
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            raise BenchError(f"the engine could not load {path} (status {process.returncode}):\n{log_tail(log)}")
        yield line.removeprefix("READY "), time.perf_counter() - started
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ------------------------------------------------------------------ running


@dataclass
class Result:
    config: Config
    runs: int
    passed: dict[str, int] = field(default_factory=dict)  # prompt name -> runs passed
    scores: list[int] = field(default_factory=list)  # passes out of 20, per run
    tokens: list[int] = field(default_factory=list)  # completion tokens of every reply
    truncated: int = 0  # replies cut at max_tokens
    seconds: float = 0.0
    failures: list[tuple[int, str, str]] = field(default_factory=list)  # (run, prompt, reply)
    long: list[tuple[int, bool, float]] = field(default_factory=list)  # --long: (tokens, cut, repeated 4-grams)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores)


def ask(
    client: httpx2.Client, url: str, system: str, text: str, sampling: dict, max_tokens: int = MAX_TOKENS
) -> tuple[str, int, str]:
    """One reply: (text, completion tokens, finish reason)."""
    body = {
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "stream": False,
        **sampling,
    }
    try:
        response = client.post(f"{url}/v1/chat/completions", json=body)
        response.raise_for_status()
        answer = response.json()
        choice = answer["choices"][0]
        return choice["message"]["content"] or "", answer["usage"]["completion_tokens"], choice.get("finish_reason")
    except httpx2.TimeoutException as error:
        raise BenchError(
            f"prompt {text[:40]!r}: no reply within {REPLY_TIMEOUT:.0f} s; is the machine busy (another engine)?"
        ) from error
    except (httpx2.HTTPError, KeyError, IndexError, ValueError) as error:
        raise BenchError(f"prompt {text[:40]!r}: the engine's answer failed: {error!r}") from error


def evaluate(url: str, config: Config, runs: int, system: str, concurrency: int, long: bool = False) -> Result:
    runs = runs if config.sampled else 1
    result = Result(config, runs, passed={prompt.name: 0 for prompt in PROMPTS}, scores=[0] * runs)
    jobs = [(run, prompt) for run in range(runs) for prompt in PROMPTS]
    # No connection reuse, as in LocalModel: llama.cpp's server may drop a kept-alive connection.
    client = httpx2.Client(timeout=REPLY_TIMEOUT, limits=httpx2.Limits(max_keepalive_connections=0))
    pool = ThreadPoolExecutor(concurrency)
    started = time.perf_counter()
    try:
        futures = [pool.submit(ask, client, url, system, prompt.text, config.body(run + 1)) for run, prompt in jobs]
        if long:  # once, with the first run's seed
            sampling = config.body(seed=1)
            extra = [pool.submit(ask, client, url, system, text, sampling, LONG_MAX_TOKENS) for text in LONG_PROMPTS]
        for (run, prompt), future in zip(jobs, futures, strict=True):
            reply, tokens, finish = future.result()
            result.tokens.append(tokens)
            result.truncated += finish == "length"
            if prompt.check(reply):
                result.passed[prompt.name] += 1
                result.scores[run] += 1
            else:
                result.failures.append((run + 1, prompt.name, reply))
        if long:
            for future in extra:
                reply, tokens, finish = future.result()
                result.long.append((tokens, finish == "length", repeated_4grams(reply)))
    finally:
        # On failure or Ctrl-C, no waiting for the replies in flight: stopping the engine ends them.
        pool.shutdown(wait=False, cancel_futures=True)
    client.close()
    result.seconds = time.perf_counter() - started
    return result


# ------------------------------------------------------------------ output


def table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> None:
    """Columns padded to fit; the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for index, row in enumerate([header, *rows]):
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [str(cell).ljust(width) if i < left else str(cell).rjust(width) for i, (cell, width) in pairs]
        print("  " + "  ".join(cells).rstrip())
        if index == 0:
            print("  " + "  ".join("-" * width for width in widths))


def report(results: list[Result]) -> None:
    print()
    long = bool(results[0].long)
    header = ["config", "", "temp", "top_p", "top_k", "rep", "runs", "score /20 per run", "mean"]
    header += ["tok/reply", "cut", *(["long cut", "long tok", "long rep4"] if long else []), "wall s"]
    rows = []
    for result in results:
        config = result.config
        row = [
            config.name, config.note, f"{config.temperature:g}", f"{config.top_p:g}", str(config.top_k),
            f"{config.repeat_penalty:g}", str(result.runs), " ".join(map(str, result.scores)), f"{result.mean:.1f}",
            f"{statistics.fmean(result.tokens):.0f}", str(result.truncated),
        ]  # fmt: skip
        if long:
            tokens, cut, repeated = zip(*result.long, strict=True)
            row += [f"{sum(cut)}/{len(cut)}", f"{statistics.fmean(tokens):.0f}", f"{statistics.fmean(repeated):.0%}"]
        rows.append([*row, f"{result.seconds:.1f}"])
    table(header, rows, left=2)
    print("\n  per prompt: runs passed / runs")
    header = ["prompt", "expects", *(result.config.name for result in results)]
    rows = [
        [prompt.name, prompt.expected, *(f"{result.passed[prompt.name]}/{result.runs}" for result in results)]
        for prompt in PROMPTS
    ]
    table(header, rows, left=2)


def show_failures(results: list[Result]) -> None:
    for result in results:
        print(f"\n  failed replies of {result.config.name}:")
        for run, name, reply in result.failures:
            print(f"    [{name} run {run}] {reply.strip()!r}"[:400])


# ------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", action="extend", nargs="+", metavar="PATH.gguf",
        help="GGUF files to evaluate, each on its own engine (repeat or list; default: the built-in smollm2-135m)",
    )  # fmt: skip
    parser.add_argument("--runs", type=int, default=3, help="runs of each sampled config (temperature > 0), default 3")
    parser.add_argument("--no-extra", action="store_true", help="only the before and after configs")
    parser.add_argument("--parallel", type=int, default=4, help="requests in flight, and engine slots (default 4)")
    parser.add_argument("--threads", type=int, help="CPU threads of the engine (default: one per core)")
    parser.add_argument(
        "--long", action="store_true",
        help=f"also {len(LONG_PROMPTS)} open questions per config (max {LONG_MAX_TOKENS} tokens): do replies loop?",
    )  # fmt: skip
    parser.add_argument("--show-failures", action="store_true", help="print every reply that failed its check")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.parallel < 1:
        parser.error("--runs and --parallel must be at least 1")
    return args


def run(args: argparse.Namespace, workdir: Path) -> int:
    settings = Settings()
    system = settings.system_prompt_support
    chosen = configs(settings, extra=not args.no_extra)
    models = args.model or [model_path("smollm2-135m")]
    summary = []
    for path in models:
        if not Path(path).is_file():
            raise BenchError(f"no such GGUF file: {path}")
        size = Path(path).stat().st_size / 1e6
        print(f"\n== {Path(path).name} ({size:.0f} MB)", flush=True)
        warn_if_busy()
        started = time.perf_counter()
        with engine(path, workdir, args.parallel, args.threads) as (url, loaded):
            print(f"  engine ready in {loaded:.1f} s at {url}", flush=True)
            results = []
            for config in chosen:
                result = evaluate(url, config, args.runs, system, args.parallel, args.long)
                print(f"  {config.name}: {result.mean:.1f}/20 in {result.seconds:.1f} s", flush=True)
                results.append(result)
        report(results)
        if args.show_failures:
            show_failures(results)
        print(f"\n  {Path(path).name}: {time.perf_counter() - started:.0f} s in all")
        summary.append((Path(path).name, results))
    if len(summary) > 1:
        print("\n== mean score /20, every model")
        table(["model", *(config.name for config in chosen)], [
            [name, *(f"{result.mean:.1f}" for result in results)] for name, results in summary
        ])  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench("eval", lambda workdir: run(args, workdir), "engine stopped, temp files removed")


if __name__ == "__main__":
    sys.exit(main())
