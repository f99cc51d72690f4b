"""The ``prism`` command line."""

__all__: list[str] = []
