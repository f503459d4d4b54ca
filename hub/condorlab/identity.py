"""Each session's own certificate, and the check that a lab is that session before the hub routes to it.

JupyterHub's stock session certificates name every host a lab may run on and
live for years, so any session certificate of the notebooks CA passes the
hub's check for any node: a user's batch job that takes a port another user's
lab reported could answer in its place. condorlab makes a fresh key and
certificate for each session instead:

- named only as needed: the execute nodes (the hub reaches the lab by its node's
  name) and the name the proxy checks the lab by -- with ``subdomain_host`` the
  user's own domain, so the proxy itself refuses another user's lab; without
  it, the public names (the proxy then checks only the CA);
- valid for the session's start timeout plus its walltime plus a margin;
- pinned: the hub keeps the certificate's SHA-256 fingerprint and talks to the
  lab (readiness, health checks, the shutdown request) only over a connection on
  which the lab presented exactly that certificate.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# How far a certificate's start is put back, for clocks a little behind the hub's.
CLOCK_SKEW = 300


class IdentityError(Exception):
    """Something answered on the lab's address, but not with this session's certificate."""


def fingerprint(cert: bytes | str) -> str:
    """SHA-256 of a certificate (DER bytes or PEM text), as hex."""
    if isinstance(cert, str):
        cert = x509.load_pem_x509_certificate(cert.encode()).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(cert).hexdigest()


def _general_name(alt_name: str) -> x509.GeneralName:
    kind, _, value = alt_name.partition(":")
    if kind == "DNS" and value:
        return x509.DNSName(value)
    if kind == "IP" and value:
        return x509.IPAddress(ipaddress.ip_address(value))
    raise ValueError(f"subjectAltName {alt_name!r} is not DNS:<name> or IP:<address>")


def _authority_key_identifier(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def make_session_cert(
    ca_cert_pem: str, ca_key_pem: str, common_name: str, alt_names: list[str], lifetime: int
) -> tuple[str, str]:
    """A new key and a certificate signed by the notebooks CA: (key PEM, certificate PEM)."""
    if not alt_names:
        raise ValueError("a session certificate needs at least one name")
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names = [_general_name(name) for name in dict.fromkeys(alt_names)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(seconds=CLOCK_SKEW))
        .not_valid_after(now + datetime.timedelta(seconds=lifetime))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # Python 3.13's strict verification wants both key identifiers.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_identifier(ca_cert), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


async def open_verified(
    host: str, port: int, context: ssl.SSLContext, pinned: str, timeout: float = 10
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A mutual-TLS connection to host:port on which the peer showed the pinned certificate.

    Raises IdentityError if another certificate answered, OSError (e.g.
    ConnectionRefusedError) or TimeoutError if nothing did.
    """
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=context, server_hostname=host), timeout
    )
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    if not der or fingerprint(der) != pinned:
        writer.close()
        raise IdentityError(f"{host}:{port} answered with another certificate than this session's")
    return reader, writer


async def check_lab(host: str, port: int, context: ssl.SSLContext, pinned: str, timeout: float = 10) -> None:
    """Raise unless the session's own lab answers on host:port (see open_verified)."""
    _, writer = await open_verified(host, port, context, pinned, timeout)
    writer.close()


async def post_verified(
    host: str,
    port: int,
    path: str,
    headers: dict[str, str],
    context: ssl.SSLContext,
    pinned: str,
    timeout: float = 10,
) -> int:
    """POST an empty body to the session's own lab only; return the HTTP status.

    The request (with its token) is written on the connection whose peer
    proved to be the session, never on a new one.
    """
    reader, writer = await open_verified(host, port, context, pinned, timeout)
    try:
        lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Length: 0", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
    parts = status_line.decode(errors="replace").split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise OSError(f"no HTTP answer from {host}:{port}")
    return int(parts[1])
