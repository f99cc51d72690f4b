"""What a release's steps need done through the data plane: readings and actions.

:meth:`Acting.observe` gathers what the machine wants for a Tick (weights,
the target's health, the target's and the baseline's counters, the confirm
hook's answer); :meth:`Acting.set_share` performs a share change under the
app's traffic lock and saves the step in that change's own commit;
:meth:`Acting.drain` waits for colors that lost their traffic. Each returns
the event the machine steps on next.
"""

from __future__ import annotations

import logging

from prism.core.capacity import cap_rollback, ready_counts
from prism.core.keys import dump, release_key
from prism.core.model import backend_name
from prism.core.readings import Counters
from prism.core.shares import set_share
from prism.dataplane.base import DataPlane
from prism.dataplane.change import Along
from prism.errors import PrismError
from prism.release import machine
from prism.release.events import Audit, Drain, Drained, SetShare, ShareFailed, ShareSet, Step, Tick
from prism.release.gates import health_gate
from prism.release.record import ReleaseRecord
from prism.release.recorder import Recorder, audit_draft
from prism.release.traffic import Traffic
from prism.release.webhooks import confirm
from prism.store.desired import load_state
from prism.types import Clock, Compare, Put, Store

__all__ = ["Acting"]

log = logging.getLogger("prism.release.engine")


class Acting:
    """The data-plane side of driving a release: readings in, traffic changes out."""

    def __init__(
        self, store: Store, traffic: Traffic, plane: DataPlane, clock: Clock, recorder: Recorder
    ) -> None:
        self.store = store
        self.traffic = traffic
        self.plane = plane
        self.clock = clock
        self.recorder = recorder

    async def observe(self, record: ReleaseRecord) -> Tick:
        """What :func:`machine.wants` for the next Tick of ``record``."""
        wants = machine.wants(record)
        if not wants.readings:
            return Tick(at=self.clock.now())
        state = await load_state(self.store)
        app = state.spec.app(record.app)
        target = backend_name(app.name, record.to_color)
        baseline = backend_name(app.name, record.from_color)
        try:
            servers = await self.plane.servers([target])
            counters = await self.plane.counters([target, baseline])
        except PrismError as exc:
            # no reading at all: the machine counts it against consecutive_error_limit
            log.warning("release %s/%s: no reading: %s", record.app, record.to_color, exc)
            return Tick(at=self.clock.now(), weights=state.routing_for(app).weights)
        answer = None
        if wants.confirm is not None and record.plan.confirm is not None:
            ask = wants.confirm
            question = self.recorder.hook_event(
                record, "step.confirm", ask.seq, {"step": ask.step, "weight": ask.weight}
            )
            answer = await confirm(self.recorder.webhooks, record.plan.confirm, question)
        return Tick(
            at=self.clock.now(),
            weights=state.routing_for(app).weights,
            health=health_gate(servers, target, record.to_color),
            target=counters.get(target),
            baseline=counters.get(baseline),
            confirm=answer,
            lost=(await self.plane.info()).lost,
        )

    async def set_share(
        self, result: Step, action: SetShare, expect: int | None
    ) -> tuple[ShareSet | ShareFailed, int]:
        """Give the target its share (leaving colors other releases move alone) and save
        ``result`` unless ``expect`` is None (already saved); see :meth:`share_locked`."""
        async with self.traffic.lock(result.record.app):
            return await self.share_locked(result, action, expect)

    async def share_locked(
        self, result: Step, action: SetShare, expect: int | None
    ) -> tuple[ShareSet | ShareFailed, int]:
        """The share change of ``action``, holding the app's traffic lock.

        With ``expect`` (the record's stored revision), ``result`` is saved first:
        in the share change's own transaction when there is one, so the record
        naming the change in flight and the new routing land together; alone
        otherwise, or when that transaction was refused (then a Conflict on the
        record itself propagates: reload). Returns the outcome and the record's
        revision.
        """
        record = result.record
        along: Along | None = None
        if expect is not None:
            key = release_key(record.app, record.to_color)
            along = Along(
                [Put(key, dump(record))],
                expect=[Compare(key, expect)],
                # a started release's first step carries its start's entry too
                audits=[audit_draft(record, a) for a in result.actions if isinstance(a, Audit)],
                landed=self.recorder.landed,
            )
        try:
            state = await load_state(self.store)
            app = state.spec.app(record.app)
            routing = state.routing_for(app)
            busy = await self.traffic.releasing(app.name) - {record.to_color}
            donors = [
                c.name for c in app.colors if c.name != record.to_color and c.name not in busy
            ]
            target = set_share(
                routing.weights,
                record.to_color,
                action.share,
                donors=donors,
                source=action.source,
                restore=action.restore,
            )
            capped: tuple[str, ...] = ()
            if action.purpose == "rollback" and record.initial_up:
                up = await self.ready(app.name, list(target))
                target, capped = cap_rollback(
                    target,
                    record.to_color,
                    record.initial_weights,
                    record.initial_up,
                    up,
                )
            ms = None
            if target != routing.weights:
                done = await self.traffic.set_weights(
                    app,
                    routing,
                    target,
                    actor=record.actor,
                    action=f"release.{action.purpose}",
                    reason=record.reason,
                    detail=dict(action.detail),
                    along=along,
                )
                ms = done["ms"]
        except PrismError as exc:
            revision = await self._saved(result, expect, along)
            return ShareFailed(
                at=self.clock.now(), purpose=action.purpose, error=str(exc)
            ), revision
        revision = await self._saved(result, expect, along)
        readings: dict[str, Counters] = {}
        if action.purpose == "step":
            # The counters the new analysis window starts from; none read is no window yet.
            backends = [backend_name(app.name, c) for c in (record.to_color, record.from_color)]
            try:
                readings = await self.plane.counters(backends)
            except PrismError as exc:
                log.warning("release %s/%s: %s", record.app, record.to_color, exc)
        return ShareSet(
            at=self.clock.now(),
            purpose=action.purpose,
            weights=target,
            ms=ms,
            target=readings.get(backend_name(app.name, record.to_color)),
            baseline=readings.get(backend_name(app.name, record.from_color)),
            capped=capped,
        ), revision

    async def _saved(self, result: Step, expect: int | None, along: Along | None) -> int:
        """``result``'s revision once saved: by the share change's commit, or now, alone."""
        if along is not None and along.revision is not None:
            self.recorder.emit(result)
            return along.revision
        if expect is None:
            return 0  # not ours to save: the caller keeps the revision it has
        return await self.recorder.commit(result, expect)

    async def ready(self, app: str, colors: list[str]) -> dict[str, int]:
        """Ready servers per color, as the data plane sees them now."""
        backends = {color: backend_name(app, color) for color in colors}
        return ready_counts(await self.plane.servers(list(backends.values())), backends)

    async def drain(self, record: ReleaseRecord, action: Drain) -> Drained:
        state = await load_state(self.store)
        app = state.spec.app(record.app)
        result = await self.traffic.drain(app, list(action.colors), action.timeout_ms)
        return Drained(at=self.clock.now(), result=result)
