"""Talking to HAProxy: Runtime API commands, reply parsers and the client."""

__all__: list[str] = []
