"""The HTTP API (the AI Chats API under ``/api/v1``)."""

from aichats.api.app import create_app

__all__ = ["create_app"]
