"""The tests' shared helpers, each in one place.

- ``databases``: the migrated templates and the fresh databases copied from them;
- ``accounts``: a new user and API key;
- ``servers``: ``aichats serve`` and ``aichats worker`` processes, the CLI, and the app
  in this process (``AppServer``, over ``httpx2.ASGITransport``; ``uvicorn_server``);
- ``sse``: reading event streams (with ``httpx-sse``);
- ``waiting``: polling until a condition holds;
- ``api``: creating a chat and checking the error envelope.
"""
