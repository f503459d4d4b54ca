"""Our API handlers: JupyterHub's server API refuses oversized start requests before it reads or stores them."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from unittest import mock

import pytest
from condorlab import handlers
from jupyterhub.apihandlers import default_handlers
from jupyterhub.apihandlers.users import UserServerAPIHandler
from jupyterhub.handlers.base import BaseHandler
from tornado import web
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

HUGE = "x" * 2**20  # a 1 MB start option


def server_handler(method: str, body) -> handlers.ServerAPIHandler:
    """Our server API handler for one request to /hub/api/users/bob/server, as tornado makes it."""
    request = HTTPServerRequest(
        start_line=RequestStartLine(method, "/hub/api/users/bob/server", "HTTP/1.1"),
        headers=HTTPHeaders({"Host": "hub.example.org", "Content-Type": "application/json"}),
        body=body if isinstance(body, bytes) else json.dumps(body).encode(),
        connection=mock.Mock(),
    )
    return handlers.ServerAPIHandler(web.Application(hub=SimpleNamespace(base_url="/hub/")), request)


def short_refusal(refused, status: int) -> str:
    message = refused.value.log_message
    assert refused.value.status_code == status
    # What JupyterHub's API answers and logs: {"status": ..., "message": ...}, and the message.
    assert len(json.dumps({"status": status, "message": message})) < 300, message
    assert "x" * 41 not in message, "at most a short prefix of a value is quoted"
    return message


def test_jupyterhub_s_server_api_is_ours_on_both_paths():
    handlers.install()
    handlers.install()  # twice: as when the spawner module is imported again
    servers = {path: handler for path, handler, *_ in default_handlers if handler is handlers.ServerAPIHandler}
    assert set(servers) == {r"/api/users/([^/]+)/server", r"/api/users/([^/]+)/servers/([^/]*)"}
    assert not [path for path, handler, *_ in default_handlers if handler is UserServerAPIHandler]


def test_a_large_body_is_refused_before_it_is_read(monkeypatch):
    async def authenticated(self):
        pass

    monkeypatch.setattr(BaseHandler, "prepare", authenticated)
    handler = server_handler("POST", {"profile": HUGE})
    with pytest.raises(web.HTTPError) as refused:
        asyncio.run(handler.prepare())
    assert "a server request takes at most 4096" in short_refusal(refused, 413)
    asyncio.run(server_handler("POST", {"profile": "physics/small", "cpus": "2"}).prepare())
    asyncio.run(server_handler("DELETE", b"").prepare())


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"profile": HUGE}, "profile 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... (1048576 characters)"),
        ({"user_options": {"memory": HUGE}, "display_name": "x"}, "memory 'xxx"),
        ({"user_options": {f"k{n}": 1 for n in range(9)}}, "9 start options; a session takes at most 3"),
        ({"user_options": {"profile": {"group": "physics"}}}, "profile must be text or a number, not a mapping"),
    ],
)
def test_start_options_that_are_not_a_few_short_values_are_refused(body, expected):
    # JupyterHub's own parsing, in both forms of the body, then ours: before JupyterHub stores anything.
    with pytest.raises(web.HTTPError) as refused:
        server_handler("POST", body).get_server_json_body()
    assert expected in short_refusal(refused, 400)


def test_start_options_within_the_bounds_reach_jupyterhub_unchanged():
    options = {"profile": "physics/small", "cpus": "2", "memory": "1GB"}
    assert server_handler("POST", options).get_server_json_body()["user_options"] == options
    assert server_handler("POST", {"user_options": options}).get_server_json_body()["user_options"] == options
    assert server_handler("POST", b"").get_server_json_body()["user_options"] is None


def test_an_edit_of_the_server_s_options_is_bounded_too(monkeypatch):
    edits = []

    async def edit(self, user_name, server_name=""):
        edits.append(self.get_json_body())

    monkeypatch.setattr(UserServerAPIHandler, "patch", edit)
    patch = handlers.ServerAPIHandler.patch.__wrapped__  # past the scope check, which needs a logged-in user
    with pytest.raises(web.HTTPError) as refused:
        asyncio.run(patch(server_handler("PATCH", {"user_options": {"profile": HUGE}}), "bob"))
    short_refusal(refused, 400)
    assert edits == [], "JupyterHub never saw (logged, stored) it"
    asyncio.run(patch(server_handler("PATCH", {"user_options": {"profile": "physics/small"}}), "bob"))
    asyncio.run(patch(server_handler("PATCH", {"display_name": "mine"}), "bob"))
    assert edits == [{"user_options": {"profile": "physics/small"}}, {"display_name": "mine"}]


def test_a_lab_s_requests_are_taken_only_with_its_own_server_s_token():
    """The socket report and the pool token: bob's lab, alice's own API token or no token get nothing."""

    class Lab(SimpleNamespace):
        def accept_report(self, path):
            return ""

    default, other = Lab(api_token="tok-default"), Lab(api_token="tok-other")
    alice = SimpleNamespace(spawners={"": default, "other": other})

    def asking(token):
        return SimpleNamespace(get_auth_token=lambda: token, current_user=alice)

    assert handlers.own_server(asking("tok-other"), "no") is other
    for token in ("tok-bob", "alice's own API token", "", None):
        with pytest.raises(web.HTTPError) as refused:
            handlers.own_server(asking(token), "only a running condorlab lab may ask for its pool token")
        assert refused.value.status_code == 403


def test_the_pool_token_is_served_at_its_own_path_next_to_the_report():
    handlers.install()
    paths = {path: handler for path, handler, *_ in default_handlers}
    assert paths[handlers.TOKEN_PATH] is handlers.TokenHandler
    assert paths[handlers.PORT_REPORT_PATH] is handlers.PortReportHandler
