"""aichats: self-hosted AI chats with scheduled automation."""

__version__ = "0.1.0"
