"""The hub's configuration from the settings file the jupyterhub role writes."""

from __future__ import annotations

import copy
import json

import pytest
from condorlab import handlers, jobs, settings
from jupyterhub.apihandlers import default_handlers
from traitlets.config import Config


@pytest.fixture
def site(tmp_path):
    token = tmp_path / "prometheus.token"
    token.write_text("metrics-token\n")
    return {
        "network": {
            "public_port": 8443,
            "hub_port": 8081,
            "hub_connect_url": "https://hub:8081",
            "proxy_api_port": 8001,
            "internal_certs": "/var/lib/jupyterhub/internal-ssl",
            "hub_alt_names": ["DNS:hub", "DNS:hub.localhost"],
            "subdomain_host": "https://hub.localhost:8443/",
            "labs_domain": "labs.localhost",
        },
        "state": {"dir": "/var/lib/jupyterhub"},
        "login": {"authenticator": "pam", "allowed_groups": ["physics", "astro"], "oidc": {}},
        "spawner": {
            "job_helper": "/opt/condorlab/hub/bin/condorlab-job",
            "job_tunnel": "/opt/condorlab/hub/bin/condorlab-tunnel",
            "start_timeout": 300,
            "poll_interval": 7,
            "lost_after": 20,
            "startup_poll_interval": 0.5,
        },
        "queue": {"max_age": 1.5, "reschedule_after": 20, "avoid_lost_nodes_for": 600},
        "services": {
            "bin_dir": "/opt/condorlab/hub/bin",
            "job_helper": "/opt/condorlab/hub/bin/condorlab-job",
            "internal_certs": "/var/lib/jupyterhub/internal-ssl",
            "sweep_every": 300,
            "orphan_grace": 600,
            "metrics_token_file": str(token),
            "idle_timeouts": {"physics": 3600, "astro": 0, "gw": 120},
        },
        "overrides": {"JupyterHub.concurrent_spawn_limit": 40},
    }


def test_the_hub_is_configured_from_the_settings_file(site, tmp_path):
    path = tmp_path / "condorlab-hub.json"
    path.write_text(json.dumps(site))
    c = Config()
    settings.configure(c, str(path))
    assert c.JupyterHub.bind_url == "https://:8443" and c.JupyterHub.internal_ssl is True
    assert c.JupyterHub.subdomain_host == "https://hub.localhost:8443"
    assert c.JupyterHub.cookie_host_prefix_enabled is True
    assert c.JupyterHub.cleanup_servers is False, "a hub restart ends nobody's session"
    assert c.PAMAuthenticator.allowed_groups == {"physics", "astro"}
    assert c.JupyterHub.spawner_class == "condorlab.spawner.CondorlabSpawner"
    assert c.CondorlabSpawner.job_tunnel == "/opt/condorlab/hub/bin/condorlab-tunnel"
    assert (c.Spawner.poll_interval, c.CondorlabSpawner.lost_after) == (7, 20)
    assert (jobs.shared_cache.max_age, jobs.shared_cache.reschedule_after, jobs.shared_cache.avoid_for) == (
        1.5,
        20,
        600,
    )
    assert c.JupyterHub.concurrent_spawn_limit == 40, "the site's overrides come last"
    names = [s["name"] for s in c.JupyterHub.services]
    assert names == ["condorlab-sweep", "prometheus", "idle-culler-physics", "idle-culler-gw"], "none for astro (0)"
    gw = c.JupyterHub.services[-1]["command"]
    assert "--timeout=120" in gw and "--cull-every=30" in gw
    assert c.JupyterHub.services[1]["api_token"] == "metrics-token"
    culler_scopes = next(r for r in c.JupyterHub.load_roles if r["name"] == "idle-culler-gw")["scopes"]
    assert all(scope.endswith("!group=gw") for scope in culler_scopes)
    assert c.JupyterHub.last_activity_interval == 40, "a third of the shortest idle timeout"
    paths = [h[0] for h in default_handlers]
    assert handlers.PORT_REPORT_PATH in paths and r"/api/batchspawner" not in paths


def test_an_oidc_login_takes_the_provider_s_endpoints_and_keeps_the_session_s_group(site):
    site["login"] = {
        "authenticator": "oidc",
        "allowed_groups": ["physics"],
        "oidc": {
            "client_id": "condorlab",
            "authorize_url": "https://idp/authorize",
            "token_url": "https://idp/token",
            "userdata_url": "https://idp/userinfo",
            "ca": "/etc/jupyterhub/oidc-ca.crt",
            "username_claim": "preferred_username",
            "groups_claim": "groups",
            "scope": ["openid", "profile"],
            "callback_url": "https://hub/hub/oauth_callback",
        },
    }
    c = Config()
    settings.configure(c, site)
    auth = c.GenericOAuthenticator
    assert c.JupyterHub.authenticator_class == "generic-oauth"
    assert (auth.client_id, auth.token_url, auth.auth_state_groups_key) == (
        "condorlab",
        "https://idp/token",
        "oauth_user.groups",
    )
    assert auth.http_request_kwargs == {"ca_certs": "/etc/jupyterhub/oidc-ca.crt"}
    assert auth.post_auth_hook(None, None, {"name": "alice", "groups": ["physics", "astro"]})["groups"] is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(extra={}), "unknown section(s) extra"),
        (lambda s: s.pop("login"), "missing section(s) login"),
        (lambda s: s["spawner"].update(poll_intervall=3), "spawner: unknown setting(s) poll_intervall"),
        (lambda s: s["login"].update(authenticator="ldap"), "login.authenticator is 'ldap'; use pam or oidc"),
    ],
)
def test_a_settings_file_the_hub_cannot_use_is_refused_by_name(site, tmp_path, change, message, capsys):
    bad = copy.deepcopy(site)
    change(bad)
    path = tmp_path / "condorlab-hub.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(settings.SettingsError) as refused:
        settings.configure(Config(), str(path))
    assert message in str(refused.value) and str(path) in str(refused.value)
    assert settings.main([str(path)]) == 1, "the role's validation refuses it before it is installed"
    assert message in capsys.readouterr().err
    path.write_text(json.dumps(site))
    assert settings.main([str(path)]) == 0
