"""Throwaway certificates for tests and benchmarks: a CA and leaves it signs, as PEM text.

Keys are P-256 (a key takes well under a millisecond); every leaf gets a fresh
random serial, so a test can tell which certificate a handshake saw::

    ca = TestCA.create()
    leaf = ca.issue(["shop.test"])
    leaf.bundle        # certificate, the CA's certificate, key: what `prism cert set` takes
    leaf.serial        # hex, as status and `show ssl cert` show it
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["Leaf", "TestCA"]


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


@dataclass(frozen=True)
class Leaf:
    """A leaf certificate, its chain and its key, as PEM."""

    cert: str
    chain: str
    key: str
    serial: str

    @property
    def bundle(self) -> str:
        """Certificate, chain, key: one file HAProxy serves from."""
        return self.cert + self.chain + self.key


@dataclass(frozen=True)
class TestCA:
    """A self-signed CA that issues leaves (see the module docstring)."""

    __test__ = False  # not a pytest test class

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str = "prism-test-ca") -> TestCA:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=400))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @property
    def pem(self) -> str:
        """The CA certificate, for a client's trust store."""
        return _pem(self.cert)

    def issue(
        self,
        names: list[str],
        *,
        days: float = 90,
        not_before: datetime | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> Leaf:
        """A leaf for ``names`` (DNS names), valid ``days`` from ``not_before`` (an hour ago)."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        start = not_before or datetime.now(UTC) - timedelta(hours=1)
        serial = x509.random_serial_number()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=days))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        return Leaf(_pem(cert), self.pem, _key_pem(key), format(serial, "X").lstrip("0"))
