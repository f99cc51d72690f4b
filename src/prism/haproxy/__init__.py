"""Everything that speaks HAProxy.

Pure: :mod:`.tokens` (the token grammar), :mod:`.commands` (Runtime API
commands built only from checked arguments), :mod:`.parsers` (replies),
:mod:`.readouts` (``show stat`` as readings), :mod:`.render` and
:mod:`.rules` (desired state as a config, map files and pages),
:mod:`.changes` (the smallest runtime change, or a reload),
:mod:`.server_state` and :mod:`.layout` (where one HAProxy's files live).

I/O: :mod:`.runtime` (the Runtime API client and its socket transport),
:mod:`.master` (the master CLI), :mod:`.supervisor` (start, adopt, reload,
restart, stop), :mod:`.binary` (which HAProxy), :mod:`.dynamic` (adding and
removing servers at runtime without exposing a bad one).

May import: ``prism.core`` and the top-level modules.
"""
