"""The hub's link to a session's lab: its identity, its health check, its shutdown, and how it is reached.

With internal TLS, each session gets its own key and certificate
(identity.py): named only as needed, valid for the session's time, and
pinned: the hub routes to a lab, checks its health and sends it a shutdown
token only over a connection on which that very certificate answered, so a
user's job squatting on another session's port is never routed to. The key,
certificate and CA bundle travel as 0600 files with the job (the job's host is
not known when they are made); a session on a node the names do not cover
fails at once.

How the hub reaches the lab is the transport's: DirectTransport connects to
the port the lab reported on its node. A transport that reaches the lab
another way gives the hub (and the proxy) another endpoint for the same lab;
identity, health and shutdown stay as they are.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from jupyterhub.utils import make_ssl_context
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from . import contract, identity, messages
from .policy import LabWatch


class DirectTransport:
    """The lab listens on a TCP port of its execute node; the hub and the proxy connect there."""

    name = "direct"

    def endpoint(self, host: str, port: int) -> tuple[str, int]:
        """Where the hub and the proxy connect to reach the lab on host:port."""
        return host, port

    def url(self, server, path: str) -> str:
        """The plain-HTTP URL of a path of the lab (without internal TLS): the server's own address."""
        return f"{server.host}{path}"


def name_covers(alt_name: str, host: str) -> bool:
    """Whether a subjectAltName entry ("DNS:wn1.example.org", "DNS:*.example.org") names host."""
    if not alt_name.startswith("DNS:"):
        return False
    pattern = alt_name[4:].lower().rstrip(".")
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and rest == pattern[2:]
    return host == pattern


@dataclass
class LabLink:
    """One server's link to its lab; the spawner gives it its TLS settings and the transport."""

    spawner: object  # the CondorlabSpawner: its user, internal TLS settings and names
    transport: DirectTransport
    watch: LabWatch

    @property
    def _names(self) -> list[str]:
        names = self.spawner.ssl_alt_names
        return list(names) if isinstance(names, list) else []

    def alt_names(self) -> list[str]:
        """The names a session certificate carries, and why.

        The execute nodes (ssl_alt_names): the hub reaches the lab by its node's
        name. The name the proxy checks the lab against, which Node takes from
        the Host the browser used: the user's own domain with subdomain_host,
        otherwise the public names. Never localhost or the hub's names.
        """
        user = self.spawner.user
        names = self._names
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
        """The hub's client context for talking to a lab (mutual TLS), or None without internal TLS."""
        if not self.spawner.internal_ssl:
            return None
        settings = self.spawner.user.settings
        return make_ssl_context(
            settings["internal_ssl_key"], settings["internal_ssl_cert"], cafile=settings["internal_ssl_ca"]
        )

    def covers(self, host: str) -> bool:
        """Whether the session certificate's names (ssl_alt_names) cover this host."""
        return not self.spawner.internal_ssl or any(name_covers(name, host) for name in self._names)

    async def check(self, host: str, port: int, pinned: str) -> None:
        """Raise unless this session's own lab answers on host:port (identity.check_lab)."""
        context = self.context()
        if context is None:
            return
        if not pinned:
            raise identity.IdentityError("this session has no certificate on record")
        await identity.check_lab(*self.transport.endpoint(host, port), context, pinned)

    async def lost(self, host: str, port: int, pinned: str, cache) -> tuple[str, str] | None:
        """(reason, message) when the running lab is gone by the watch's rules; None while it counts as there.

        A lost node is told to the queue view (cache.node_lost): new sessions avoid it for a while.
        """
        error = None
        try:
            await self.check(host, port, pinned)
        except (identity.IdentityError, OSError, TimeoutError) as exc:
            error = exc
        since = self.watch.unreachable_since or time.time()
        reason = self.watch.judge(error)
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
    """JupyterHub's certificate hooks, the port report and the shutdown, for CondorlabSpawner (self.lab: LabLink).

    Uses the spawner's session, job_id, port, port_range, server and user.
    """

    def accept_port(self, port: int) -> str:
        """Take a port reported by this server's own job (handlers.py); return an error message or ''."""
        low, high = self.port_range
        if not low <= port <= high:
            return f"port {port} is outside the allowed range {low}-{high}"
        if not self.job_id or self.port:
            return "this server is not waiting for a port"
        self.port = port
        return ""

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


__all__ = ["DirectTransport", "LabHooks", "LabLink", "name_covers"]
