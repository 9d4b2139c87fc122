"""A certificate authority made on the spot, and a certificate for 127.0.0.1 that it signed.

`streambench --provider anthropic` serves its stand-in of the Messages API over TLS with
them, as the API is served, and its workers trust the authority (SSL_CERT_FILE), so each
new connection costs its handshake as it does in production.
"""

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_FOR = datetime.timedelta(days=1)


@dataclass(frozen=True)
class LocalAuthority:
    # The authority's certificate (PEM): what a client trusts.
    authority: Path
    # The server's certificate and its private key (PEM), as `SSLContext.load_cert_chain` takes them.
    server: Path


def local_authority(directory: Path, *, name: str) -> LocalAuthority:
    """Write a new authority named `name`, and a server certificate for 127.0.0.1 it signed, into `directory`."""
    authority_key = ec.generate_private_key(ec.SECP256R1())
    authority_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    authority = (
        _builder(authority_name, authority_name, authority_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(authority_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    server = (
        _builder(server_name, authority_name, server_key.public_key())
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(authority_key, hashes.SHA256())
    )
    paths = LocalAuthority(authority=directory / f"{name}-authority.pem", server=directory / f"{name}-server.pem")
    paths.authority.write_bytes(authority.public_bytes(serialization.Encoding.PEM))
    paths.server.write_bytes(
        server.public_bytes(serialization.Encoding.PEM)
        + server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
    )
