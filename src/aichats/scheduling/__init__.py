"""Firing schedules: each due instant becomes one queued agent turn."""
