"""A notebooks CA laid out as JupyterHub's internal certificate store does."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make_ca(name: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


@pytest.fixture(scope="session")
def ca_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("internal-ssl")
    (store / "notebooks-ca").mkdir()
    cert, key = make_ca("notebooks-ca")
    (store / "notebooks-ca" / "notebooks-ca.crt").write_text(cert)
    (store / "notebooks-ca" / "notebooks-ca.key").write_text(key)
    (store / "notebooks-ca_trust.crt").write_text(cert)
    return store


class FakeHelper:
    """The job helper and the seal as the spawner sees them (helperclient.HelperClient): records each call."""

    def __init__(self, cluster: int = 12, work_dir: str = "/shared/alice"):
        self.calls = []
        self.cluster = cluster
        self.work_dir = work_dir

    async def submit(self, request):
        self.calls.append((("submit",), request))
        return {"cluster": self.cluster, "work_dir": self.work_dir}

    async def remove(self, job_id):
        self.calls.append((("remove", job_id), None))
        return {"removed": self.cluster}

    async def clean(self, server_key):
        self.calls.append((("clean", server_key), None))
        return {}

    async def seal(self, server_key, cluster):
        self.calls.append((("seal", cluster), None))
        return {"sealed": int(cluster), "removed": []}

    async def tunnel(self, verb, server_key, *args):
        self.calls.append((("tunnel", verb, server_key, *args), None))
        return {"port": 30007} if verb == "open" else {"closed": 30007}

    async def token(self, lifetime):
        self.calls.append((("token", str(lifetime)), None))
        return {"token": f"eyJ.token{len(self.calls)}.sig", "lifetime": int(lifetime)}

    @property
    def commands(self):
        """The calls without their standard input: ("remove", "12"), ("clean", "default"), ..."""
        return [args for args, _ in self.calls]


@pytest.fixture
def fake_helper():
    return FakeHelper()
