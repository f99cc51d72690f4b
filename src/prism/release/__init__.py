"""Releases: plans, the pure state machine that runs them, and the engine that drives it.

* :mod:`.plan` — a release plan (weight, pause, analysis steps; webhooks);
* :mod:`.record` — a release's whole state as saved, and its phases;
* :mod:`.machine` — the transition table and ``step(record, event)``, with
  :mod:`.events` (what it is told, what it asks for);
* :mod:`.analysis` and :mod:`.gates` — pure judgements of counters and health;
* :mod:`.traffic` — the gated, persisted, verified weight change every
  release step, shift and rollback is made of;
* :mod:`.engine` — the thin loop: observe, step, save, then act;
* :mod:`.webhooks` — release events delivered in order, and the confirm hook.

The machine and the judgements are pure. The engine and traffic reach HAProxy
only through the data-plane seam (:mod:`prism.dataplane`). May import:
``prism.dataplane``, ``prism.store``, ``prism.core``, top-level modules.
"""
