"""Test aids shipped with Prism."""

from prism.testing.fake_runtime import FakeHAProxy, FakeTransport, UnexpectedCommand

__all__ = ["FakeHAProxy", "FakeTransport", "UnexpectedCommand"]
