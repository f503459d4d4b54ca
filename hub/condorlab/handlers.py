"""The singleuser server's port report: one integer port, for the caller's own server."""

from __future__ import annotations

import hmac
import json

from jupyterhub.apihandlers import APIHandler, default_handlers
from tornado import web

PORT_REPORT_PATH = r"/api/condorlab/port"
# batchspawner registers a handler that sets any spawner attribute named in
# the request body; it must never be reachable.
UNSAFE_PATHS = {r"/api/batchspawner"}


class PortReportHandler(APIHandler):
    """POST {"port": N} with the server's own API token sets that server's port.

    Anything else (other keys, a non-integer, a port outside the spawner's
    range, a server that is not starting, a token of another server) is refused
    and changes nothing.
    """

    @web.authenticated
    async def post(self):
        user = self.current_user
        token = self.get_auth_token() or ""
        spawner = None
        for candidate in getattr(user, "spawners", {}).values():
            api_token = getattr(candidate, "api_token", "") or ""
            if api_token and hmac.compare_digest(api_token, token):
                spawner = candidate
                break
        if spawner is None or not hasattr(spawner, "accept_port"):
            raise web.HTTPError(403, "only a starting condorlab server may report its port")
        try:
            body = json.loads(self.request.body or b"null")
        except ValueError:
            raise web.HTTPError(400, "the body must be JSON") from None
        if not isinstance(body, dict) or set(body) != {"port"}:
            raise web.HTTPError(400, 'the body must be exactly {"port": <integer>}')
        port = body["port"]
        if isinstance(port, bool) or not isinstance(port, int):
            raise web.HTTPError(400, "port must be an integer")
        error = spawner.accept_port(port)
        if error:
            raise web.HTTPError(400, error)
        self.set_status(204)
        self.finish()


def install() -> None:
    """Add our handler to the hub's API and drop batchspawner's."""
    default_handlers[:] = [h for h in default_handlers if h[0] not in UNSAFE_PATHS]
    if not any(h[0] == PORT_REPORT_PATH for h in default_handlers):
        default_handlers.append((PORT_REPORT_PATH, PortReportHandler))
