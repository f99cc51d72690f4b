"""Prism's REST API under ``/api/v1``: thin handlers over the use-case services.

:mod:`.app` builds the FastAPI application; :mod:`.problems` is the one place
Prism's errors become problem+json answers. May import: ``prism.services``
and everything below it; never the CLI.
"""

from prism.api.app import create_app

__all__ = ["create_app"]
