"""Test aids shipped with Prism: fakes for unit tests, real processes for integration tests.

Fakes: :mod:`.fake_runtime` (HAProxy's Runtime API replayed),
:mod:`.dataplane` (a data plane of dictionaries), :mod:`.clock` (time that
moves only when something sleeps), :mod:`.memory_store`, :mod:`.wait`
(polling with a deadline). Real: :mod:`.processes` (demo backends, any child
stopped by its PID), :mod:`.etcd` (etcd servers and clusters), :mod:`.fleet`
(a whole fleet on loopback), :mod:`.load` (a load generator).
"""

from prism.testing.fake_runtime import FakeHAProxy, FakeTransport, UnexpectedCommand

__all__ = ["FakeHAProxy", "FakeTransport", "UnexpectedCommand"]
