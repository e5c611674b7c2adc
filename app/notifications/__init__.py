"""Outgoing messages to users (email)."""
