"""The agent: model providers and the context a turn sends them."""
