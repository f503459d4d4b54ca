"""Our API handlers: the lab's socket report, its pool token, and JupyterHub's server API with bounded start options."""

from __future__ import annotations

import hmac
import json

from jupyterhub.apihandlers import APIHandler, default_handlers
from jupyterhub.apihandlers.users import UserServerAPIHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from . import profiles

PORT_REPORT_PATH = r"/api/condorlab/port"
TOKEN_PATH = r"/api/condorlab/token"  # noqa: S105 - an API path, not a secret
# batchspawner registers a handler that sets any spawner attribute named in
# the request body; it must never be reachable.
UNSAFE_PATHS = {r"/api/batchspawner"}
# The largest body (bytes) a request to start, create, edit or stop a server
# may have: start options are a few short values (profiles.OPTION_MAX_LENGTH).
SERVER_BODY_MAX = 4096


class PortReportHandler(APIHandler):
    """POST where the lab listens, with the server's own API token: {"socket": "<path on its node>"}
    (LabHooks.accept_report; the path keeps its name, port, from when labs listened on ports).

    Anything else (other keys, a bad value, a server that is not
    starting, a token of another server) is refused and changes nothing.
    """

    @web.authenticated
    async def post(self):
        spawner = own_server(self, "only a starting condorlab server may report its socket")
        try:
            body = json.loads(self.request.body or b"null")
        except ValueError:
            raise web.HTTPError(400, "the body must be JSON") from None
        if not isinstance(body, dict) or set(body) != {"socket"}:
            raise web.HTTPError(400, 'the body must be exactly {"socket": <path>}')
        error = spawner.accept_report(body["socket"])
        if error:
            raise web.HTTPError(400, error)
        self.set_status(204)
        self.finish()


def own_server(handler: APIHandler, refusal: str):
    """The condorlab server whose own API token authenticated this request (never another server's or a
    user's token), else 403 with the refusal."""
    token = handler.get_auth_token() or ""
    for candidate in getattr(handler.current_user, "spawners", {}).values():
        api_token = getattr(candidate, "api_token", "") or ""
        if api_token and token and hmac.compare_digest(api_token, token) and hasattr(candidate, "accept_report"):
            return candidate
    raise web.HTTPError(403, refusal)


class TokenHandler(APIHandler):
    """POST, with a running lab's own API token: a fresh HTCondor token of its user's, for its tools
    (LabHooks.pool_token): {"token": ..., "lifetime": seconds, "schedd": the schedd's address file}.
    The lab asks again before it expires; once the session has ended its API token is gone and so is
    the renewal."""

    @web.authenticated
    async def post(self):
        spawner = own_server(self, "only a running condorlab lab may ask for its pool token")
        if self.request.body and self.request.body.strip() not in (b"", b"{}"):
            raise web.HTTPError(400, "the body must be empty")
        answer, error = await spawner.pool_token()
        if error:
            raise web.HTTPError(answer, error)
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(answer))


def check_body_size(body: bytes) -> None:
    """Refuse (413) a server request's body over SERVER_BODY_MAX bytes."""
    if len(body or b"") > SERVER_BODY_MAX:
        raise web.HTTPError(
            413, f"the request's body has {len(body)} bytes; a server request takes at most {SERVER_BODY_MAX}"
        )


def check_user_options(options) -> None:
    """Refuse (400) start options that are not a mapping of a few short values (profiles.check_bounds)."""
    if options is None:
        return
    try:
        profiles.check_bounds(options)
    except profiles.OptionsError as exc:
        raise web.HTTPError(400, f"Cannot take these start options: {exc}") from None


class ServerAPIHandler(UserServerAPIHandler):
    """JupyterHub's API to start (POST), create (PUT), edit (PATCH) and stop a server, bounded.

    JupyterHub 6 stores a start's or a create's user_options in its database
    before the spawner checks them, and an edit stores them and logs them in
    full without any check. Here a body over SERVER_BODY_MAX bytes is refused
    before it is parsed, and options that are not a few short values before
    JupyterHub reads them; the spawner checks the rest (profiles.resolve).
    """

    async def prepare(self):
        await super().prepare()
        check_body_size(self.request.body)

    def get_server_json_body(self):
        # POST and PUT read their body here, in either of its forms ({"user_options": {...}} or the options alone).
        body = super().get_server_json_body()
        check_user_options(body.get("user_options"))
        return body

    @needs_scope("start:servers")
    async def patch(self, user_name, server_name=""):
        body = self.get_json_body()
        if isinstance(body, dict) and "user_options" in body:
            check_user_options(body["user_options"])
        return await super().patch(user_name, server_name)


def install() -> None:
    """Add our report and token handlers to the hub's API, drop batchspawner's, bound JupyterHub's server API."""
    default_handlers[:] = [h for h in default_handlers if h[0] not in UNSAFE_PATHS]
    for path, handler in ((PORT_REPORT_PATH, PortReportHandler), (TOKEN_PATH, TokenHandler)):
        if not any(h[0] == path for h in default_handlers):
            default_handlers.append((path, handler))
    for index, (path, handler, *rest) in enumerate(default_handlers):
        if handler is UserServerAPIHandler:
            default_handlers[index] = (path, ServerAPIHandler, *rest)
