"""The release phase table."""

from __future__ import annotations

import pytest

from prism.errors import IllegalTransition
from prism.release.machine import TERMINAL, TRANSITIONS, Phase, advance


def test_phase_table() -> None:
    """Legal transitions advance; illegal ones raise; terminal phases go nowhere."""
    assert advance(Phase.PENDING, Phase.RUNNING) is Phase.RUNNING
    assert advance(Phase.WAITING, Phase.ROLLING_BACK) is Phase.ROLLING_BACK
    with pytest.raises(IllegalTransition):
        advance(Phase.PENDING, Phase.COMPLETED)
    with pytest.raises(IllegalTransition):
        advance(Phase.COMPLETED, Phase.RUNNING)
    with pytest.raises(IllegalTransition):
        advance(Phase.ROLLED_BACK, Phase.ROLLING_BACK)
    # Every active phase but pending can roll back; only draining cannot be aborted.
    for phase in (Phase.RUNNING, Phase.PAUSED, Phase.WAITING, Phase.HOLDING):
        assert Phase.ROLLING_BACK in TRANSITIONS[phase]
    assert {p for p, n in TRANSITIONS.items() if not n} == TERMINAL
    # Every phase is reachable from pending.
    seen, todo = {Phase.PENDING}, [Phase.PENDING]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(Phase)
