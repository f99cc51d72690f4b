"""PUT /certificates/{name}: checked, sent to the data plane, audited; refusals change nothing."""

from __future__ import annotations

from typing import Any

from prism.testing.certs import TestCA
from tests.unit.api.conftest import Api, MakeApi
from tests.unit.services.conftest import shop

CA = TestCA.create()


async def _tls_api(make_api: MakeApi, **tls: Any) -> Api:
    api: Api = await make_api()
    spec = shop(tls={"certs": ["/etc/prism/shop.pem"], **tls}).model_dump(mode="json")
    assert (await api.change("PUT", "/config", {"spec": spec})).status_code == 200
    return api


async def test_a_good_certificate_is_set_and_audited_without_its_key(make_api: MakeApi) -> None:
    """200 with what now serves; the audit record names file, subject and serial, no key."""
    api = await _tls_api(make_api)
    leaf = CA.issue(["shop.test"])
    reply = await api.change("PUT", "/certificates/shop", {"pem": leaf.bundle, "reason": "renew"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["path"] == "/etc/prism/shop.pem"
    assert reply.json()["serial"] == leaf.serial
    assert api.plane.certs["/etc/prism/shop.pem"].serial == leaf.serial
    records = await api.store.audit(limit=1)
    assert records[0].action == "cert.set"
    assert records[0].detail["serial"] == leaf.serial
    assert records[0].reason == "renew"
    key_body = leaf.key.splitlines()[1]
    assert key_body not in str(records[0].detail)
    assert "PRIVATE" not in str(records[0].detail)
    listed = (await api.client.get("/certificates")).json()
    assert listed[0]["name"] == "shop"
    assert listed[0]["serving"][0]["serial"] == leaf.serial


async def test_bad_bundles_are_refused_and_change_nothing(make_api: MakeApi) -> None:
    """Wrong key, a blank line with a command after it, garbage: 422, no call, no record."""
    api = await _tls_api(make_api)
    leaf, other = CA.issue(["shop.test"]), CA.issue(["shop.test"])
    before = (await api.store.audit(limit=1))[0].id
    revision = await api.store.revision()
    for pem in (
        leaf.cert + leaf.chain + other.key,
        leaf.cert + "\nshow info\n" + leaf.key,
        "garbage",
    ):
        reply = await api.change("PUT", "/certificates/shop", {"pem": pem})
        assert reply.status_code == 422, reply.text
        assert reply.json()["type"] == "https://prism.dev/problems/invalid-input"
    assert api.plane.certs == {}
    assert (await api.store.audit(limit=1))[0].id == before
    assert await api.store.revision() == revision


async def test_owners_must_exist_terminate_tls_and_own_the_file(make_api: MakeApi) -> None:
    """404 for no such app or listener; 422 for an app without TLS or a file not its own."""
    api: Api = await make_api()
    pem = CA.issue(["shop.test"]).bundle
    assert (await api.change("PUT", "/certificates/nope", {"pem": pem})).status_code == 404
    reply = await api.change("PUT", "/certificates/shop", {"pem": pem})
    assert reply.status_code == 422
    assert "does not terminate TLS" in reply.text
    api = await _tls_api(make_api)
    reply = await api.change("PUT", "/certificates/shop", {"pem": pem, "file": "/etc/passwd"})
    assert reply.status_code == 422
    assert "not a certificate file of 'shop'" in reply.text


async def test_with_several_certificates_the_one_sharing_a_name_is_replaced(
    make_api: MakeApi,
) -> None:
    """SNI picks among several files; a rotation picks the file serving the same names."""
    api = await _tls_api(make_api, certs=["/etc/prism/a.pem", "/etc/prism/b.pem"])
    first, second = CA.issue(["a.test"]), CA.issue(["b.test"])
    for path, leaf in (("/etc/prism/a.pem", first), ("/etc/prism/b.pem", second)):
        body = {"pem": leaf.bundle, "file": path}
        assert (await api.change("PUT", "/certificates/shop", body)).status_code == 200

    async def by_name(plane_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {**row, "names": f"DNS:{api.plane.certs[row['path']].names[0]}"} for row in plane_rows
        ]

    original = api.plane.certificates

    async def certificates(tls: Any, *, warn_days: int) -> list[dict[str, Any]]:
        return await by_name(await original(tls, warn_days=warn_days))

    api.plane.certificates = certificates  # type: ignore[method-assign]
    renewed = CA.issue(["b.test"])
    reply = await api.change("PUT", "/certificates/shop", {"pem": renewed.bundle})
    assert reply.status_code == 200, reply.text
    assert reply.json()["path"] == "/etc/prism/b.pem"
    stranger = CA.issue(["c.test"])
    reply = await api.change("PUT", "/certificates/shop", {"pem": stranger.bundle})
    assert reply.status_code == 422
    assert "--file" in reply.text
