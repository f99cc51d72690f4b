"""``prism serve``: a control plane's lifespan and its HTTP server.

* :mod:`.lifespan` — the composition root: store, data plane (local HAProxy or
  a fleet), change path, engine and services, owned by one lifespan;
* :mod:`.leader` — which of a fleet's control planes drives releases;
* :mod:`.http` — uvicorn around the API until a signal.

May import anything below the API layer, and the API.
"""
