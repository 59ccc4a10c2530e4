"""Throwaway TLS material: a self-signed certificate made at start, and its fingerprint.

PVE nodes ship a self-signed certificate too, so the simulator exercises the same client
paths a fresh cluster does (fingerprint pinning or a CA file).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class SelfSigned:
    """A certificate and key in PEM, and the certificate's SHA-256 fingerprint."""

    cert_pem: bytes
    key_pem: bytes
    fingerprint: str
    """Lower-case hex, no separators."""

    @property
    def fingerprint_colons(self) -> str:
        """The fingerprint as PVE shows it: upper-case byte pairs joined by colons."""
        upper = self.fingerprint.upper()
        return ":".join(upper[i : i + 2] for i in range(0, len(upper), 2))


def make_self_signed(
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), days: int = 30
) -> SelfSigned:
    """Make an EC P-256 self-signed certificate valid for `hosts` (names or IP literals)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pvemcp simulator")])
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    return SelfSigned(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        fingerprint=hashlib.sha256(der).hexdigest(),
    )
