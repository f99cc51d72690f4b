"""The pure core: what Prism should make HAProxy do, as values.

* :mod:`.model` — the desired-state model (apps, colors, servers, routing,
  pins), frozen and validated however it comes in;
* :mod:`.buckets` — the bucket layout that turns weights into map ranges with
  the fewest users moved; :mod:`.shares` — one color's share set without
  disturbing the others';
* :mod:`.keys` — desired state as store entries and back;
* :mod:`.readings` — what a data plane reports (servers' exact health,
  counters, smoke replies) and the one definition of "a passed check";
* :mod:`.fleet` — the fleet's store keys and a node's report;
* :mod:`.balancing` — slow-server judgements and circuit-trip episodes over a
  node's readings; :mod:`.dns` — health-weighted DNS weights and their Route 53
  change batch.

No I/O: no event loop, socket, file, process or store. May import only the
top-level modules (errors, names, types) and pydantic.
"""
