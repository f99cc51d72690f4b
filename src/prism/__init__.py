"""Prism: a control plane that makes HAProxy do safe releases."""

__all__ = ["__version__"]

__version__ = "0.1.0"
