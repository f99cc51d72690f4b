"""``prism demo``: demo backends that answer with their color and version, and the demo itself.

May import everything: it starts a whole control plane (or a fleet) locally.
"""

__all__: list[str] = []
