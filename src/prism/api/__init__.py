"""Prism's REST API under ``/api/v1``."""

from prism.api.app import create_app

__all__ = ["create_app"]
