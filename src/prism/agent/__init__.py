"""The fleet agent: one per HAProxy node, keeping it in step with desired state in etcd.

``prism agent`` supervises its node's HAProxy exactly as ``prism serve`` does
(master-worker, adopt on restart, restart on crash), watches desired state,
converges through the same apply path (:class:`prism.node.applier.Applier`),
and reports what it applied and sees under a key bound to its lease
(:mod:`prism.core.fleet`). The control plane's fleet data plane
(:mod:`prism.dataplane.fleet`) reads those reports.

The data plane never depends on the control plane: HAProxy starts from what is
on disk before the store is reached, and keeps serving its last applied state
while etcd or every control plane is down.

May import: ``prism.dataplane.local`` (the node it drives), ``prism.node``,
``prism.haproxy``, ``prism.store``, ``prism.core``, top-level modules.
"""
