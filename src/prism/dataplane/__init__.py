"""The seam between deciding and doing.

Everything above this package (the use-case services, the release engine)
changes traffic the same way: commit desired state, then ask the data plane to
*converge* on it and say what took effect, and read the data plane's
*readings* (servers' exact health, backend counters, smoke replies). Below it
the two modes differ:

* :mod:`prism.dataplane.local` drives the HAProxy of this process's node
  in-process (the embedded, single-node mode);
* :mod:`prism.dataplane.fleet` writes to etcd and waits for every node's
  agent to report (fleet mode).

:mod:`prism.dataplane.base` holds the interface and its values;
:mod:`prism.dataplane.change` the one "commit, converge, revert if refused"
sequence every change goes through.

May import: ``prism.core``, ``prism.node``, ``prism.haproxy``, ``prism.store``,
and the top-level modules. Never the release engine, services, API or CLI.
"""
