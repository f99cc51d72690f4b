"""Demo and test backends: small HTTP servers that answer with their color and version."""

__all__: list[str] = []
