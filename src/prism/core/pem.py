"""Checking a PEM bundle before HAProxy sees it: a certificate, its chain and its key.

HAProxy takes a new certificate over the Runtime API as a ``<<`` payload, which
ends at the first empty line and has no escaping: a blank line inside an
unchecked PEM would end the payload there and run whatever follows as
commands. So a bundle is accepted only when every line is a PEM boundary or
base64, and it parses as exactly one unencrypted private key and one or more
certificates, where

* the first certificate is the leaf, and its public key is the key's;
* every further certificate issued the one before it (chain order);
* the leaf is valid now (not expired, not yet to come).

:func:`check_pem` returns what Prism shows and compares after a commit
(:class:`CertInfo`); nothing here does I/O.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from prism.errors import InvalidInput

__all__ = ["PEM_LIMIT", "CertInfo", "check_pem", "normalize_serial"]

#: the largest bundle accepted: HAProxy refuses a command over ``tune.bufsize``
#: (16,384 bytes by default), and the payload travels in one command
PEM_LIMIT = 15_000

_BOUNDARY = re.compile(r"-----(BEGIN|END) ([A-Z0-9 ]{1,40})-----", re.ASCII)
_BASE64 = re.compile(r"[A-Za-z0-9+/=]{1,76}", re.ASCII)
_KEY_LABELS = frozenset({"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"})
_HINT = "send one PEM file: the certificate, then its chain in order, and its unencrypted key"


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What a checked bundle holds, in the terms ``show ssl cert`` uses."""

    subject: str
    issuer: str
    names: tuple[str, ...]
    serial: str
    """Hexadecimal, upper case, no leading zeros (:func:`normalize_serial`)."""
    sha1: str
    """The leaf's SHA-1 fingerprint as HAProxy prints it (hex, upper case)."""
    not_before: datetime
    not_after: datetime
    chain: int
    """Certificates after the leaf."""
    text: str
    """The bundle as it is sent and written: LF line ends, one final newline."""

    def summary(self) -> dict[str, object]:
        """What may be shown and audited: never the key, never the PEM itself."""
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "names": list(self.names),
            "serial": self.serial,
            "sha1": self.sha1,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "chain": self.chain,
        }


def normalize_serial(serial: str) -> str:
    """A certificate serial as hex digits, upper case, without leading zeros or colons."""
    digits = serial.replace(":", "").strip().upper().lstrip("0")
    return digits or "0"


def _refuse(message: str) -> InvalidInput:
    return InvalidInput(f"refusing this certificate: {message}", hint=_HINT)


def _blocks(text: str) -> list[tuple[str, str]]:
    """``(label, block text)`` of every PEM block; anything else in the text is refused."""
    lines = text.split("\n")
    blocks: list[tuple[str, str]] = []
    label: str | None = None
    body: list[str] = []
    for number, line in enumerate(lines, start=1):
        if line == "":
            raise _refuse(
                f"line {number} is empty: HAProxy's payload would end there and the rest "
                "would run as Runtime API commands"
            )
        boundary = _BOUNDARY.fullmatch(line)
        if boundary is None:
            if label is None or _BASE64.fullmatch(line) is None:
                raise _refuse(f"line {number} is neither a PEM boundary nor base64")
            body.append(line)
            continue
        kind, name = boundary.groups()
        if kind == "BEGIN":
            if label is not None:
                raise _refuse(f"line {number} begins a block inside {label!r}")
            label, body = name, [line]
        else:
            if label != name:
                raise _refuse(f"line {number} ends a {name!r} block that did not begin")
            blocks.append((name, "\n".join([*body, line]) + "\n"))
            label = None
    if label is not None:
        raise _refuse(f"the {label!r} block does not end")
    return blocks


def _name(name: x509.Name) -> str:
    """A distinguished name the way ``show ssl cert`` prints it: ``/CN=shop.test``."""
    return "".join(f"/{attr.rfc4514_attribute_name}={attr.value!s}" for attr in name)


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return tuple(str(attr.value) for attr in common)
    return tuple(san.value.get_values_for_type(x509.DNSName))


def _spki(public_key: object) -> bytes:
    public_bytes = getattr(public_key, "public_bytes", None)
    if public_bytes is None:
        raise _refuse("the key's type is not supported")
    data: bytes = public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def check_pem(pem: str, *, now: datetime) -> CertInfo:
    """Check a bundle (see the module docstring); InvalidInput says what is wrong."""
    if not isinstance(pem, str):
        raise _refuse("it is not text")
    if len(pem.encode("utf-8", errors="replace")) > PEM_LIMIT:
        raise _refuse(f"it is over {PEM_LIMIT:,} bytes")
    if not pem.isascii():
        raise _refuse("it holds characters that are not ASCII")
    text = pem.replace("\r\n", "\n").removesuffix("\n")
    if text == "":
        raise _refuse("it is empty")
    blocks = _blocks(text)
    certs = [block for label, block in blocks if label == "CERTIFICATE"]
    keys = [block for label, block in blocks if label in _KEY_LABELS]
    others = sorted({label for label, _ in blocks if label != "CERTIFICATE"} - _KEY_LABELS)
    if others:
        raise _refuse(f"it holds {', '.join(others)} blocks (an encrypted key cannot be used)")
    if not certs:
        raise _refuse("it holds no certificate")
    if len(keys) != 1:
        raise _refuse(f"it holds {len(keys)} private keys, not one")
    try:
        chain = [x509.load_pem_x509_certificate(block.encode("ascii")) for block in certs]
    except ValueError:
        raise _refuse("a certificate does not parse") from None
    try:
        key = serialization.load_pem_private_key(keys[0].encode("ascii"), password=None)
    except (ValueError, TypeError):
        raise _refuse("the private key does not parse") from None
    leaf = chain[0]
    if _spki(key.public_key()) != _spki(leaf.public_key()):
        raise _refuse("the private key does not belong to the first certificate")
    for index, (cert, issuer) in enumerate(itertools.pairwise(chain), start=1):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise _refuse(
                f"certificate {index + 1} did not issue certificate {index}: the chain must "
                "follow the leaf in order, each certificate then its issuer"
            ) from None
    not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    moment = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    if not_after <= moment:
        raise _refuse(f"it expired on {not_after.isoformat()}")
    if not_before > moment:
        raise _refuse(f"it is not valid before {not_before.isoformat()}")
    return CertInfo(
        subject=_name(leaf.subject),
        issuer=_name(leaf.issuer),
        names=_names(leaf),
        serial=normalize_serial(format(leaf.serial_number, "X")),
        # HAProxy identifies a loaded certificate by its SHA-1 fingerprint; no security rests on it
        sha1=leaf.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303
        not_before=not_before,
        not_after=not_after,
        chain=len(chain) - 1,
        text=text + "\n",
    )
