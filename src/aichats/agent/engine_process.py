"""The local engine's own process: llama.cpp's server (from ``xllamacpp``) on one GGUF file.

``aichats`` never loads model weights into its own process. :mod:`aichats.agent.engine`
starts this module as a child (``python -m aichats.agent.engine_process``), so that a
fault in native code (a bad CPU instruction, running out of memory, a kill) ends this
process only, and the supervisor starts a fresh one.

The engine is llama.cpp's own HTTP server, embedded in the ``xllamacpp`` wheel
(prebuilt, with its CPU variant chosen at run time: no compiler, no ``-march=native``).
It speaks the OpenAI chat-completions protocol, streams a usage chunk at the end,
tokenizes (``/tokenize``) and decodes ``--parallel`` sequences at once (continuous
batching). It listens on a free loopback port and prints one line, ``READY <url>``, once
the model is loaded. It exits when its standard input closes: the parent has gone.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m aichats.agent.engine_process")
    parser.add_argument("--model", required=True, help="the GGUF file")
    parser.add_argument("--parallel", type=int, default=4, help="sequences decoded at once")
    parser.add_argument("--context", type=int, default=4096, help="context tokens of each sequence")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--verbosity", type=int, default=1, help="llama.cpp's log level (1: errors)")
    args = parser.parse_args(argv)

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.n_parallel = args.parallel
    params.n_ctx = args.context * args.parallel  # llama.cpp splits it evenly between the slots
    for cpu in (params.cpuparams, params.cpuparams_batch):
        cpu.n_threads = args.threads
        # Threads sleep between steps instead of spinning: the engine shares the machine with
        # the API and the database, and spinning threads that lose their core slow every
        # step down (measured here: 4 replies at once 9.3 s spinning, 7.0 s not).
        cpu.poll = 0
    params.port = 0  # a free port, chosen by the kernel
    params.verbosity = args.verbosity
    server = xllamacpp.Server(params)  # loads the model; raises if it cannot
    print(f"READY {server.listening_address}", flush=True)
    sys.stdin.buffer.read()  # until the parent closes our standard input (or dies)
    os._exit(0)  # no teardown of native threads: the process is ending anyway


if __name__ == "__main__":
    main()
