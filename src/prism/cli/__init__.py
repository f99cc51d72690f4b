"""The ``prism`` command line: thin sync edges over the HTTP API.

Every command but ``serve``, ``agent`` and ``demo`` (:mod:`.daemons`) talks to
a control plane over HTTP only (:mod:`.client`), and maps its errors back to
the exception tree and exit codes in one place (:mod:`.common`). May import:
the pure model and plan (to check files before sending them), the state
directory's paths, and the top-level modules.
"""

__all__: list[str] = []
