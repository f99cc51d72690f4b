"""A certificate is written first, swapped in, read back; a refusal puts the old file back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from prism.core.pem import check_pem
from prism.errors import Drift, InvalidInput, RuntimeAPIError
from prism.haproxy.parsers import LoadedCert
from prism.haproxy.runtime import RuntimeClient
from prism.node.certs import expiry, rotate
from prism.testing.certs import TestCA
from prism.testing.fake_runtime import FakeTransport

CA = TestCA.create()


def _haproxy(path: Path, serving: str, sha1: str, *, commit: str = "Success!") -> FakeTransport:
    """Replies of HAProxy 2.8 to a rotation of ``path`` (as seen on the wheel's build)."""

    def reply(text: str) -> str:
        if text == "show ssl cert":
            return f"# filename\n{path}\n\n"
        if text.startswith(f"set ssl cert {path} <<\n"):
            return f"Transaction created for certificate {path}!\n\n"
        if text == f"commit ssl cert {path}":
            return f"Committing {path}.\n{commit}\n\n"
        if text == f"abort ssl cert {path}":
            return f"Transaction aborted for certificate '{path}'!\n\n"
        if text == f"show ssl cert {path}":
            return (
                f"Filename: {path}\nStatus: Used\nSerial: 00{serving}\nSHA1 FingerPrint: {sha1}\n\n"
            )
        raise AssertionError(text)

    return FakeTransport(reply)


async def test_the_file_is_written_then_committed_and_read_back(tmp_path: Path) -> None:
    """Write, set, commit, show: the answer carries timings and no key."""
    path = tmp_path / "shop.pem"
    path.write_text(CA.issue(["shop.test"]).bundle)
    cert = check_pem(CA.issue(["shop.test"]).bundle, now=datetime.now(UTC))
    transport = _haproxy(path, cert.serial, cert.sha1)
    done = await rotate(RuntimeClient(transport), str(path), cert)
    assert path.read_text() == cert.text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [t.split("\n", 1)[0] for t in transport.sent] == [
        "show ssl cert",
        f"set ssl cert {path} <<",
        f"commit ssl cert {path}",
        f"show ssl cert {path}",
    ]
    assert done["serial"] == cert.serial
    assert "PRIVATE" not in str(done)


async def test_a_refused_commit_aborts_and_puts_the_old_file_back(tmp_path: Path) -> None:
    """HAProxy refuses: the transaction is aborted and the file holds the old bundle."""
    path = tmp_path / "shop.pem"
    old = CA.issue(["shop.test"]).bundle
    path.write_text(old)
    cert = check_pem(CA.issue(["shop.test"]).bundle, now=datetime.now(UTC))
    transport = _haproxy(path, cert.serial, cert.sha1, commit="Can't commit!")
    with pytest.raises(RuntimeAPIError, match="refused 'commit ssl cert"):
        await rotate(RuntimeClient(transport), str(path), cert)
    assert path.read_text() == old
    assert transport.sent[-1] == f"abort ssl cert {path}"


async def test_a_read_back_of_another_serial_is_drift(tmp_path: Path) -> None:
    """The commit answered, but HAProxy serves something else."""
    path = tmp_path / "shop.pem"
    path.write_text(CA.issue(["shop.test"]).bundle)
    cert = check_pem(CA.issue(["shop.test"]).bundle, now=datetime.now(UTC))
    with pytest.raises(Drift, match="after the commit"):
        await rotate(RuntimeClient(_haproxy(path, "ABC", cert.sha1)), str(path), cert)


async def test_a_file_haproxy_did_not_load_is_refused_before_anything(tmp_path: Path) -> None:
    """Only a loaded file can be replaced at runtime; nothing is written."""
    cert = check_pem(CA.issue(["shop.test"]).bundle, now=datetime.now(UTC))
    transport = _haproxy(tmp_path / "shop.pem", cert.serial, cert.sha1)
    other = tmp_path / "other.pem"
    with pytest.raises(InvalidInput, match="has not loaded a certificate"):
        await rotate(RuntimeClient(transport), str(other), cert)
    assert not other.exists()
    assert transport.sent == ["show ssl cert"]


def test_expiry_warns_ahead_and_after() -> None:
    """HAProxy's dates become ISO; a warning inside the window, and once expired."""
    now = datetime(2026, 12, 1, tzinfo=UTC)

    def seen(when: datetime) -> LoadedCert:
        text = when.strftime("%b %d %H:%M:%S %Y GMT")
        return LoadedCert("/p", "1", "", text, "", "", "", "", "Used")

    assert expiry(seen(now + timedelta(days=90)), now=now, warn_days=30)["warning"] is None
    soon = expiry(seen(now + timedelta(days=5)), now=now, warn_days=30)
    assert soon["warning"] == "expires in 5.0 days"
    assert soon["days_left"] == 5.0
    assert expiry(seen(now - timedelta(days=1)), now=now, warn_days=30)["warning"] == "expired"
    assert (
        expiry(LoadedCert("/p", "1", "", "garbled", "", "", "", "", ""), now=now, warn_days=30)[
            "days_left"
        ]
        is None
    )
