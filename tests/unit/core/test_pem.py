"""PEM bundles are checked before HAProxy sees them: key, chain order, dates, PEM lines only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from prism.core.pem import PEM_LIMIT, check_pem, normalize_serial
from prism.errors import InvalidInput
from prism.testing.certs import TestCA

NOW = datetime.now(UTC)
CA = TestCA.create()
LEAF = CA.issue(["shop.test", "www.shop.test"])


def test_a_good_bundle_is_described() -> None:
    """Subject, names, serial, chain length and dates come out; the text ends in one newline."""
    info = check_pem(LEAF.bundle, now=NOW)
    assert info.subject == "/CN=shop.test"
    assert info.issuer == "/CN=prism-test-ca"
    assert info.names == ("shop.test", "www.shop.test")
    assert info.serial == LEAF.serial
    assert info.chain == 1
    assert info.not_after > NOW
    assert info.text == LEAF.bundle
    assert len(info.sha1) == 40
    assert "PRIVATE" not in str(info.summary())


def test_crlf_line_ends_are_accepted_as_lf() -> None:
    """A bundle saved on Windows is the same bundle."""
    assert check_pem(LEAF.bundle.replace("\n", "\r\n"), now=NOW).text == LEAF.bundle


def test_a_key_of_another_certificate_is_refused() -> None:
    """The key must belong to the first certificate."""
    other = CA.issue(["shop.test"])
    with pytest.raises(InvalidInput, match="does not belong to the first certificate"):
        check_pem(LEAF.cert + LEAF.chain + other.key, now=NOW)


def test_a_blank_line_with_a_command_after_it_is_refused() -> None:
    """A blank line would end HAProxy's payload; what follows would run as a command."""
    hostile = LEAF.cert + "\nshow info\n" + LEAF.key
    with pytest.raises(InvalidInput, match="is empty: HAProxy's payload would end there"):
        check_pem(hostile, now=NOW)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("garbage\n", "neither a PEM boundary nor base64"),
        ("", "it is empty"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n", "does not end"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "0 private keys"),
        ("-----BEGIN CERTIFICATE-----\nAA;show info\n-----END CERTIFICATE-----\n", "base64"),
        ("caf\u00e9\n", "not ASCII"),
    ],
)
def test_garbage_is_refused(text: str, why: str) -> None:
    """Anything but PEM blocks is refused with what is wrong."""
    with pytest.raises(InvalidInput, match=why):
        check_pem(text, now=NOW)


def test_a_bundle_without_a_key_or_with_two_is_refused() -> None:
    """Exactly one private key."""
    with pytest.raises(InvalidInput, match="0 private keys"):
        check_pem(LEAF.cert, now=NOW)
    with pytest.raises(InvalidInput, match="2 private keys"):
        check_pem(LEAF.bundle + LEAF.key, now=NOW)


def test_a_certificate_that_does_not_parse_is_refused() -> None:
    """Base64 that is no certificate."""
    fake = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    with pytest.raises(InvalidInput, match="a certificate does not parse"):
        check_pem(fake + LEAF.key, now=NOW)


def test_a_chain_out_of_order_is_refused() -> None:
    """The CA before the leaf: the first certificate is not the key's."""
    with pytest.raises(InvalidInput, match="does not belong to the first certificate"):
        check_pem(LEAF.chain + LEAF.cert + LEAF.key, now=NOW)


def test_a_chain_certificate_that_did_not_issue_the_one_before_is_refused() -> None:
    """Each certificate after the leaf must have issued the one before it."""
    stranger = TestCA.create("stranger")
    with pytest.raises(InvalidInput, match="certificate 2 did not issue certificate 1"):
        check_pem(LEAF.cert + stranger.pem + LEAF.key, now=NOW)


def test_expired_and_future_certificates_are_refused() -> None:
    """Valid now, or not at all."""
    old = CA.issue(["shop.test"], days=1, not_before=NOW - timedelta(days=3))
    with pytest.raises(InvalidInput, match="expired on"):
        check_pem(old.bundle, now=NOW)
    future = CA.issue(["shop.test"], not_before=NOW + timedelta(days=2))
    with pytest.raises(InvalidInput, match="not valid before"):
        check_pem(future.bundle, now=NOW)


def test_an_encrypted_key_is_refused() -> None:
    """HAProxy cannot ask for a passphrase at runtime."""
    encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
    with pytest.raises(InvalidInput, match="ENCRYPTED PRIVATE KEY blocks"):
        check_pem(LEAF.cert + encrypted, now=NOW)


def test_a_bundle_over_the_limit_is_refused() -> None:
    """It would not fit HAProxy's command buffer."""
    with pytest.raises(InvalidInput, match="over 15,000 bytes"):
        check_pem(LEAF.bundle + "A" * PEM_LIMIT, now=NOW)


def test_the_key_may_come_first() -> None:
    """HAProxy finds the key anywhere in the file."""
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = CA.issue(["a.test"], key=key)
    assert check_pem(leaf.key + leaf.cert + leaf.chain, now=NOW).names == ("a.test",)


def test_serials_compare_without_leading_zeros_or_case() -> None:
    """HAProxy prints the serial's bytes; Python its number."""
    assert normalize_serial("00ab:CD") == "ABCD"
    assert normalize_serial("0") == "0"
