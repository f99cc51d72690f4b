"""One HAProxy node: its state directory and the apply path that converges it.

* :mod:`.applier` — disk first, then runtime (or a checked reload), then
  read-back; map changes may be staged for a fleet's lockstep commit;
* :mod:`.balancer` — the node's own loop: slow-server weights (set, kept in
  ``weights.json``, audited) and circuit-trip records;
* :mod:`.paths` — the state directory; :mod:`.files` — atomic writes;
* :mod:`.settings` — the node's settings and API token kept across restarts;
* :mod:`.admission` — could this node's HAProxy run a spec at all (file
  descriptors, ports), checked before anything is stored.

May import: ``prism.haproxy``, ``prism.core``, top-level modules.
"""
