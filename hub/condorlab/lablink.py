"""The hub's link to a session's lab: its identity, its health check, its shutdown, and how it is reached.

With internal TLS, each session gets its own key and certificate
(identity.py): named only as needed, valid for the session's time, and
pinned: the hub routes to a lab, checks its health and sends it a shutdown
token only over a connection on which that very certificate answered, so
nothing else that answers on a session's port is ever routed to. The key,
certificate and CA bundle travel as 0600 files with the job.

How the hub reaches the lab is the transport's (TunnelTransport): the lab
listens on a Unix socket in its job's private directory, and the hub and the
proxy connect to the loopback port of the session's tunnel (tunnel.py) to it;
no port of an execute node is open for labs.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from jupyterhub.utils import make_ssl_context
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from . import contract, identity, jobs, messages, tunnel
from .accounting import record_token
from .policy import LabWatch

# The least time between two pool tokens of one lab (LabHooks.pool_token): a lab
# renews its token every third of its lifetime, never in a loop.
TOKEN_FETCH_INTERVAL = 10


class TunnelTransport:
    """The lab listens on a Unix socket in its job's private directory, reached through its tunnel (tunnel.py).

    The port is the tunnel's hub-side port on loopback, which the tunnel front holds.
    """

    # The name JupyterHub and the proxy reach a tunnel by: the certificate
    # carries it (alt_names). Never 127.0.0.1, which the hub's client checks the
    # proxy's API against: a session certificate must not be able to pass for it.
    server_name = "localhost"

    def endpoint(self, host: str, port: int) -> tuple[str, int]:
        """Where the hub connects to reach the lab of host's tunnel port (health checks, shutdown)."""
        return "127.0.0.1", port

    def server_address(self, host: str, port: int) -> tuple[str, int]:
        """The server's address for JupyterHub and the proxy (the name its certificate carries for them)."""
        return self.server_name, port

    def url(self, server, path: str) -> str:
        """The plain-HTTP URL of a path of the lab (without internal TLS): the server's own address."""
        return f"{server.host}{path}"

    def seen(self, error: BaseException) -> BaseException:
        """The channel answered but closed the connection at once: its far end, the lab's socket, refused it
        (a dead node or channel makes the check wait instead)."""
        if isinstance(error, (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError, EOFError)):
            return ConnectionRefusedError(f"the lab's socket refused the tunnel's connection ({error!r})")
        return error


@dataclass
class LabLink:
    """One server's link to its lab; the spawner gives it its TLS settings and the transport."""

    spawner: object  # the CondorlabSpawner: its user, internal TLS settings and names
    transport: TunnelTransport
    watch: LabWatch
    _context: ssl.SSLContext | None = field(default=None, repr=False)

    def alt_names(self) -> list[str]:
        """The names a session certificate carries, and why.

        How the hub reaches the lab: by the tunnel's name (localhost, at a port
        the tunnel front holds). The name the proxy checks the lab against,
        which Node takes from the Host the browser used: the user's own domain
        with subdomain_host, otherwise the public names. Never an IP address,
        an execute node's or the hub's names.
        """
        user = self.spawner.user
        names = [f"DNS:{self.transport.server_name}"]
        if user.settings.get("subdomain_host"):
            names.append(f"DNS:{user.domain}")
        else:
            names += list(self.spawner.proxy_alt_names)
        return list(dict.fromkeys(names))

    def make_certs(self, lifetime: int) -> tuple[dict, list[str]]:
        """A fresh key and certificate for this session only, in memory: ({keyfile, certfile, cafile: PEM}, names)."""
        spawner = self.spawner
        store = os.path.join(spawner.internal_certs_location, "notebooks-ca")
        with open(os.path.join(store, "notebooks-ca.crt")) as handle:
            ca_cert = handle.read()
        with open(os.path.join(store, "notebooks-ca.key")) as handle:
            ca_key = handle.read()
        with open(spawner.internal_trust_bundles["notebooks-ca"]) as handle:
            ca_bundle = handle.read()
        names = self.alt_names()
        key, cert = identity.make_session_cert(ca_cert, ca_key, f"user-{spawner.user.name}", names, lifetime)
        return {"keyfile": key, "certfile": cert, "cafile": ca_bundle}, names

    def context(self) -> ssl.SSLContext | None:
        """The hub's client context for talking to a lab (mutual TLS), or None without internal TLS.

        Made once per link: the hub's internal key and CAs do not change while it runs, and every
        poll's health check uses it.
        """
        if not self.spawner.internal_ssl:
            return None
        if self._context is None:
            settings = self.spawner.user.settings
            context = make_ssl_context(
                settings["internal_ssl_key"], settings["internal_ssl_cert"], cafile=settings["internal_ssl_ca"]
            )
            # Through a tunnel the lab is at 127.0.0.1, which no certificate names:
            # the pinned certificate (identity.open_verified) is what identifies it.
            context.check_hostname = False
            self._context = context
        return self._context

    async def check(self, host: str, port: int, pinned: str) -> None:
        """Raise unless this session's own lab answers on host:port (identity.check_lab)."""
        context = self.context()
        if context is None:
            return
        if not pinned:
            raise identity.IdentityError("this session has no certificate on record")
        await identity.check_lab(
            *self.transport.endpoint(host, port), context, pinned, timeout=self.spawner.health_timeout
        )

    async def lost(self, host: str, port: int, pinned: str, cache) -> tuple[str, str] | None:
        """(reason, message) when the running lab is gone by the watch's rules; None while it counts as there.

        A lost node is told to the queue view (cache.node_lost): new sessions avoid it for a while.
        """
        error, began = None, time.time()
        try:
            await self.check(host, port, pinned)
        except (identity.IdentityError, OSError, TimeoutError, EOFError) as exc:
            error = self.transport.seen(exc)
        since = self.watch.unreachable_since or began
        reason = self.watch.judge(error, now=began)
        if reason == "node-lost":
            cache.node_lost(host, since)
        if reason:
            return reason, messages.lab_lost(reason, host, port, since)
        if error is not None:
            self.spawner.log.info(
                "Health check of %s's lab on %s did not answer: %s", self.spawner._log_name, host, error
            )
        return None

    async def shutdown(self, server, token: Callable[[], str], pinned: str) -> bool:
        """POST the lab's shutdown with a fresh token, with internal TLS only to the pinned certificate."""
        context = self.context()
        if context is not None and not pinned:
            self.spawner.log.info(
                "No certificate on record for %s; not sending a shutdown token", self.spawner._log_name
            )
            return False
        headers = {"Authorization": f"token {token()}"}
        host, port = self.transport.endpoint(server.ip, server.port)
        path = f"{server.base_url}api/shutdown"
        try:
            if context is None:
                url = self.transport.url(server, path)
                request = HTTPRequest(url, method="POST", body=b"", headers=headers, request_timeout=10)
                await AsyncHTTPClient().fetch(request)
            elif (status := await identity.post_verified(host, port, path, headers, context, pinned)) >= 400:
                raise OSError(f"HTTP {status}")
        except Exception as exc:  # the server may already be gone, or is not this session's
            self.spawner.log.info("Shutdown request to %s:%s%s failed: %s", host, port, path, exc)
            return False
        return True

    @staticmethod
    def job_files(pems: dict) -> tuple[dict, dict]:
        """(the files the job gets: sandbox name -> PEM, the environment's names for them) (contract.TLS_FILES)."""
        return {name: pems[kind] for kind, name in contract.TLS_FILES.items()}, dict(contract.TLS_FILES)


class LabHooks:
    """JupyterHub's certificate hooks, the lab's report, its tunnel and the shutdown, for CondorlabSpawner (self.lab).

    Uses the spawner's session, job_id, port, lab_socket, reported, lab_token_lifetime, token_fetched, server,
    user, helper, accounting_records and _abandon.
    """

    def accept_report(self, path) -> str:
        """Take the path of the socket on its node where this server's own job says its lab listens
        (handlers.py); return an error message or ''."""
        try:
            tunnel.check_socket_path(path if isinstance(path, str) else "")
        except tunnel.TunnelError as exc:
            return str(exc)
        if not self.job_id or self.port or self.lab_socket:
            return "this server is not waiting for its lab"
        self.lab_socket = path
        if self.reported is not None:
            self.reported.set()  # the start's wait (CondorlabSpawner._start) goes on at once
        return ""

    async def open_tunnel(self) -> None:
        """Open the tunnel to the lab's socket (tunnel.py); its hub-side port becomes the server's port."""
        try:
            reply = await self.helper.tunnel("open", self.server_key, self.job_id, self.lab_socket)
        except (OSError, RuntimeError, ValueError) as exc:
            self.log.error("Could not open the tunnel of %s: %s", self._log_name, exc)
            await self._abandon()
            raise messages.StartFailed(messages.TUNNEL_FAILED, "tunnel") from None
        self.port, self.tunnel_kept = int(reply["port"]), True
        self.log.info("Tunnel of %s to %s on port %s", self._log_name, self.lab_socket, self.port)

    async def ensure_tunnel(self) -> tuple[str, str] | None:
        """Once per hub process, for a session that ran before it started: keep its tunnel, or open it again
        on the port it is routed to (a restart of the access point empties /run). (reason, message) if not."""
        if self.tunnel_kept or not (self.lab_socket and self.port):
            return None
        self.tunnel_kept = True
        try:
            reply = await self.helper.tunnel("open", self.server_key, self.job_id, self.lab_socket, str(self.port))
        except (OSError, RuntimeError, ValueError) as exc:
            self.log.warning("Could not see to the tunnel of %s: %s", self._log_name, exc)
            return None  # the health check decides
        if int(reply["port"]) != self.port:
            await self.close_tunnel()
            return "lost", messages.TUNNEL_MOVED
        return None

    async def pool_token(self) -> tuple[dict | int, str]:
        """({"token", "lifetime", "schedd"}, "") for this server's lab, or (HTTP status, why not)
        (handlers.TokenHandler); schedd is this access point's schedd address file (jobs.schedd_address).

        A fresh HTCondor token of the user's own (the job helper, as the user), while the server has its
        session job; at most one fetch per TOKEN_FETCH_INTERVAL seconds. Never logged.
        """
        if not self.lab_token_lifetime:
            return 404, "this site gives labs no pool token (jupyterhub_lab_token_lifetime is 0)"
        if not self.job_id:
            return 409, "this server has no session job"
        now = time.monotonic()
        if self.token_fetched and now - self.token_fetched < TOKEN_FETCH_INTERVAL:
            return 429, f"a lab may ask for its token at most every {TOKEN_FETCH_INTERVAL} s"
        self.token_fetched = now
        try:
            reply = await self.helper.token(self.lab_token_lifetime)
            answer = {"token": reply["token"], "lifetime": int(reply["lifetime"]), "schedd": jobs.schedd_address()}
        except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
            self.log.warning("Could not fetch the pool token of %s: %s", self._log_name, exc)
            return 503, "the access point could not issue a token now; ask again"
        self.log.info("Pool token of %s renewed, valid %s s", self._log_name, answer["lifetime"])
        # Its id (not the token): the accounting counts the batch jobs submitted with it.
        record_token(self.accounting_records, self.user.name, self.job_id, answer["token"], self.log)
        return answer, ""

    async def close_tunnel(self) -> None:
        """Close this server's tunnel, if it has one (a tunnel opens only to a reported socket), once."""
        if not self.lab_socket:
            return
        self.lab_socket = ""
        try:
            await self.helper.tunnel("close", self.server_key)
        except (OSError, RuntimeError, ValueError) as exc:
            self.log.warning("Could not close the tunnel of %s: %s", self._log_name, exc)

    async def create_certs(self) -> dict:
        lifetime = int(self.start_timeout) + int(self.session.walltime if self.session else 0) + int(self.cert_margin)
        pems, names = self.lab.make_certs(lifetime)
        self.log.info("Session certificate for %s: %s, valid %s s", self._log_name, ";".join(names), lifetime)
        return pems

    async def move_certs(self, paths: dict) -> dict:
        """Send the TLS files with the job (as 0600 files); keep only the certificate's fingerprint."""
        self.tls_files, names = self.lab.job_files(paths)
        self.session = self.session.with_certificate(identity.fingerprint(paths["certfile"]))
        return names

    async def check_identity(self, host: str, port: int) -> None:
        await self.lab.check(host, port, self.session.cert_sha256 if self.session else "")

    async def request_shutdown(self) -> bool:
        """Ask the lab to shut down with a token made for this, valid two minutes, sent to this session only."""
        if not (self.server and self.server.port):
            return False  # never started
        scopes = [f"access:servers!server={self.user.name}/{self.name}"]
        token = lambda: self.user.new_api_token(note="condorlab: end the session", expires_in=120, scopes=scopes)  # noqa: E731
        return await self.lab.shutdown(self.server, token, self.session.cert_sha256 if self.session else "")


__all__ = ["LabHooks", "LabLink", "TunnelTransport"]
