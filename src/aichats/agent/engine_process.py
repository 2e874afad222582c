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

Tools: llama.cpp renders each request with the model's own chat template (Jinja, as
``llama-server --jinja``), and from that template it derives how the model writes a tool
call, constrains the output to that form (a grammar) and parses the calls out of it. The
built-in SmolLM2's template knows no tools (llama.cpp would drop them from the prompt), so
``--chatml-tools`` replaces it with :data:`CHATML_TOOLS`: the same ChatML, byte for byte,
for a conversation without tools, and with tools the Hermes/Qwen 2.5 convention (the
tools listed in the system message, ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``
for a call, ``<tool_response>`` for a result), which llama.cpp recognises.
"""

from __future__ import annotations

import argparse
import os
import sys

# How a call starts in CHATML_TOOLS. With tool_choice "required", llama.cpp's grammar still
# lets a model write text before its call, and SmolLM2-135M writes on until max_tokens;
# the local provider then starts the assistant's message with this (llama.cpp continues a
# final assistant message), so the grammar allows nothing but the call's JSON.
TOOL_CALL_OPENING = "<tool_call>\n"

# SmolLM2's own template (ChatML, a default system message), with tools added as Qwen 2.5
# writes them. Without tools it renders exactly what SmolLM2's template renders.
CHATML_TOOLS = r"""{%- if messages and messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set rest = messages[1:] %}
{%- else %}
    {%- set system_message = 'You are a helpful AI assistant named SmolLM, trained by Hugging Face' %}
    {%- set rest = messages %}
{%- endif %}
{{- '<|im_start|>system\n' + system_message }}
{%- if tools %}
    {{- '\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' }}
    {{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
    {%- for tool in tools %}
        {{- '\n' + (tool | tojson) }}
    {%- endfor %}
    {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments ' }}
    {{- 'within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, ' }}
    {{- '"arguments": <args-json-object>}\n</tool_call>' }}
{%- endif %}
{{- '<|im_end|>\n' }}
{%- for message in rest %}
    {%- if message.role == 'assistant' and message.tool_calls %}
        {{- '<|im_start|>assistant' }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' + tool_call.name + '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or rest[loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' + message.content + '\n</tool_response>' }}
        {%- if loop.last or rest[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m aichats.agent.engine_process")
    parser.add_argument("--model", required=True, help="the GGUF file")
    parser.add_argument("--parallel", type=int, default=4, help="sequences decoded at once")
    parser.add_argument("--context", type=int, default=4096, help="context tokens of each sequence")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--verbosity", type=int, default=1, help="llama.cpp's log level (1: errors)")
    parser.add_argument("--chatml-tools", action="store_true", help="ChatML with tools, not the model's template")
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
    params.use_jinja = True  # the chat template's own tool calls (llama-server's --jinja)
    params.prefill_assistant = True  # a final assistant message is continued (TOOL_CALL_OPENING relies on it)
    if args.chatml_tools:
        params.chat_template = CHATML_TOOLS
    params.port = 0  # a free port, chosen by the kernel
    params.verbosity = args.verbosity
    server = xllamacpp.Server(params)  # loads the model; raises if it cannot
    print(f"READY {server.listening_address}", flush=True)
    sys.stdin.buffer.read()  # until the parent closes our standard input (or dies)
    os._exit(0)  # no teardown of native threads: the process is ending anyway


if __name__ == "__main__":
    main()
