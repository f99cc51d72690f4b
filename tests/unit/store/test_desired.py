"""Reading desired state from a store: the cached spec, revisions, removals."""

from __future__ import annotations

from prism.core.keys import dump, routing_key
from prism.core.model import Spec, parse_model
from prism.core.state import Routing
from prism.types import Delete, Put


def make_spec(colors: tuple[str, ...] = ("blue", "green")) -> Spec:
    return parse_model(
        Spec,
        {
            "apps": [
                {
                    "name": "shop",
                    "bind": "127.0.0.1:8080",
                    "stable": colors[0],
                    "colors": [{"name": c, "servers": ["127.0.0.1:9001"]} for c in colors],
                }
            ]
        },
    )


async def test_load_state_reuses_the_spec_until_an_entry_changes() -> None:
    """A weight move re-reads routing but reuses the decoded spec; a spec change re-decodes."""
    from prism.store.desired import load_state
    from prism.testing.memory_store import memory_store

    store = await memory_store()
    try:
        await store.commit([Put("spec/apps/shop", dump(make_spec().apps[0]))])
        first = await load_state(store)
        await store.commit([Put(routing_key("shop"), dump(Routing.only("green", {"blue": 100})))])
        second = await load_state(store)
        assert second.spec is first.spec
        assert second.routing["shop"].active == "green"
        await store.commit(
            [Put("spec/apps/shop", dump(make_spec(("blue", "green", "red")).apps[0]))]
        )
        third = await load_state(store)
        assert third.spec is not first.spec
        assert third.spec.app("shop").has_color("red")
    finally:
        await store.close()


async def test_load_state_revision_and_removals_with_a_cached_spec() -> None:
    """The revision is that of the newest spec, routing or pin entry; a removed app is seen
    at once although the cached spec still holds it."""
    from prism.store.desired import load_state
    from prism.testing.memory_store import memory_store

    store = await memory_store()
    try:
        other = make_spec().apps[0].model_copy(update={"name": "cart", "bind": "127.0.0.1:8081"})
        await store.commit(
            [Put("spec/apps/shop", dump(make_spec().apps[0])), Put("spec/apps/cart", dump(other))]
        )
        first = await load_state(store)
        assert first.revision == 1
        moved = await store.commit(
            [Put(routing_key("shop"), dump(Routing.only("green", {"blue": 100})))]
        )
        second = await load_state(store)
        assert (second.revision, second.spec) == (moved, first.spec)
        await store.commit([Delete("spec/apps/cart")])
        third = await load_state(store)
        assert [a.name for a in third.spec.apps] == ["shop"]
        assert third.routing["shop"].active == "green"
    finally:
        await store.close()
