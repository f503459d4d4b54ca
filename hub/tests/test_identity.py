"""Session certificates and the pinned check, against real TLS servers on the loopback."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import time
from types import SimpleNamespace

import pytest
from condorlab import identity
from condorlab.jobs import JobInfo, State
from condorlab.session import Session
from condorlab.spawner import CondorlabSpawner
from cryptography import x509


def session_cert(ca_store, user: str, lifetime: int = 3600, names=("DNS:localhost",)) -> tuple[str, str]:
    ca = ca_store / "notebooks-ca"
    return identity.make_session_cert(
        (ca / "notebooks-ca.crt").read_text(),
        (ca / "notebooks-ca.key").read_text(),
        f"user-{user}",
        list(names),
        lifetime,
    )


def hub_context(ca_store) -> ssl.SSLContext:
    """The hub's side: trusts the notebooks CA and checks the host name, as JupyterHub's context does.

    Strict X.509 checks, as Python 3.13 (the hosts' Python) applies by default.
    """
    context = ssl.create_default_context(cafile=str(ca_store / "notebooks-ca_trust.crt"))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def tunnel_context(ca_store) -> ssl.SSLContext:
    """The hub's side through a tunnel (LabLink.context): the lab is at 127.0.0.1, which no certificate
    names; the pinned certificate identifies it."""
    context = hub_context(ca_store)
    context.check_hostname = False
    return context


class Lab:
    """A TLS server on 127.0.0.1 presenting a session certificate; remembers the requests it got."""

    def __init__(self, tmp_path, key: str, cert: str, name: str):
        (tmp_path / f"{name}.key").write_text(key)
        (tmp_path / f"{name}.crt").write_text(cert)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(str(tmp_path / f"{name}.crt"), str(tmp_path / f"{name}.key"))
        self.requests: list[bytes] = []

    async def handle(self, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        self.requests.append(head)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_):
        self.server.close()
        await self.server.wait_closed()


def run(coro):
    return asyncio.run(coro)


def test_a_session_certificate_names_only_what_it_needs_and_lives_for_the_session(ca_store):
    key, cert = session_cert(ca_store, "alice", lifetime=7200, names=["DNS:wn1", "DNS:alice.hub.example.org"])
    parsed = x509.load_pem_x509_certificate(cert.encode())
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert names == ["wn1", "alice.hub.example.org"]
    assert parsed.subject.rfc4514_string() == "CN=user-alice"
    life = parsed.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(seconds=7100) < life <= datetime.timedelta(seconds=7200)
    assert "PRIVATE KEY" in key


def test_bad_names_are_refused(ca_store):
    with pytest.raises(ValueError, match="needs at least one name"):
        session_cert(ca_store, "alice", names=[])
    with pytest.raises(ValueError, match="is not DNS:<name> or IP:<address>"):
        session_cert(ca_store, "alice", names=["email:alice@example.org"])


def test_only_the_pinned_certificate_passes_and_gets_the_token(ca_store, tmp_path):
    alice_key, alice_cert = session_cert(ca_store, "alice")
    bob_key, bob_cert = session_cert(ca_store, "bob")  # same CA, same names: passes plain TLS checks
    pinned = identity.fingerprint(alice_cert)

    async def scenario():
        async with Lab(tmp_path, bob_key, bob_cert, "bob") as squatter:
            # bob's certificate is valid for the host name: the plain check accepts it
            _, writer = await asyncio.open_connection(
                "localhost", squatter.port, ssl=hub_context(ca_store), server_hostname="localhost"
            )
            writer.close()
            with pytest.raises(identity.IdentityError, match="another certificate"):
                await identity.check_lab("localhost", squatter.port, hub_context(ca_store), pinned)
            with pytest.raises(identity.IdentityError):
                await identity.post_verified(
                    "localhost",
                    squatter.port,
                    "/api/shutdown",
                    {"Authorization": "token s3cret"},
                    hub_context(ca_store),
                    pinned,
                )
            assert squatter.requests == [], "the token never reaches another certificate's holder"
        async with Lab(tmp_path, alice_key, alice_cert, "alice") as lab:
            await identity.check_lab("localhost", lab.port, hub_context(ca_store), pinned)
            status = await identity.post_verified(
                "localhost",
                lab.port,
                "/user/alice/api/shutdown",
                {"Authorization": "token s3cret"},
                hub_context(ca_store),
                pinned,
            )
            assert status == 200
            assert lab.requests[0].startswith(b"POST /user/alice/api/shutdown HTTP/1.1\r\n")
            assert b"Authorization: token s3cret" in lab.requests[0]

    run(scenario())


def test_nothing_listening_is_refused(ca_store):
    with pytest.raises(ConnectionRefusedError):
        run(identity.check_lab("127.0.0.1", 1, hub_context(ca_store), "0" * 64))


class FakeCache:
    def __init__(self, info):
        self.info = info

    async def get(self, job_id, force=False):
        return self.info


@pytest.fixture
def running(ca_store, tmp_path, fake_helper):
    """alice's running session whose certificate the hub pinned, and the helper calls it makes."""
    spawner = CondorlabSpawner(
        user=SimpleNamespace(name="alice", url="/user/alice/", settings={}),
        accounting_records=str(tmp_path / "sessions.jsonl"),
    )
    spawner.internal_ssl = True
    spawner.helper = fake_helper
    spawner.lab.context = lambda: tunnel_context(ca_store)
    spawner.job_id = "12"
    spawner.status_cache = FakeCache(JobInfo(State.RUNNING, host="localhost", request_cpus=1, request_memory_mb=512))
    key, cert = session_cert(ca_store, "alice")
    spawner.session = Session(
        group="physics",
        profile="small",
        accounting_group="group_physics",
        request_cpus=1,
        request_memory_mb=512,
        walltime=3600,
        cert_sha256=identity.fingerprint(cert),
        started=time.time(),
    )
    spawner.key_cert = (key, cert)
    return spawner


def test_poll_keeps_a_session_whose_lab_answers(running, tmp_path):
    async def scenario():
        async with Lab(tmp_path, *running.key_cert, "alice") as lab:
            running.port = lab.port
            return await running.poll()

    assert run(scenario()) is None
    assert running.helper.commands == []


def test_poll_ends_a_session_when_another_certificate_holds_its_port(running, ca_store, tmp_path):
    async def scenario():
        async with Lab(tmp_path, *session_cert(ca_store, "bob"), "bob") as squatter:
            running.port = squatter.port
            return await running.poll()

    assert run(scenario()) == 1
    assert running.helper.commands == [("remove", "12"), ("clean", "default")]
    assert running.session is None


def test_poll_ends_a_session_whose_lab_stopped_listening(running):
    running.port = 1
    running.lab.watch.exit_grace = 0  # its job still runs after the grace
    assert run(running.poll()) == 1
    assert running.helper.commands[0] == ("remove", "12")


def test_poll_ends_a_session_whose_requests_were_edited(running):
    running.port = 1
    running.status_cache = FakeCache(JobInfo(State.RUNNING, host="localhost", request_cpus=8, request_memory_mb=512))
    assert run(running.poll()) == 1
    assert running.helper.commands[0] == ("remove", "12")


def test_a_suspended_session_is_not_ended(running, tmp_path):
    running.status_cache = FakeCache(JobInfo(State.SUSPENDED, host="localhost", request_cpus=1, request_memory_mb=512))
    running.port = 1
    assert run(running.poll()) is None
    assert running.helper.commands == []
