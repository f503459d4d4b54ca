"""Login through the test bed's OpenID Connect provider (LemonLDAP::NG on cm, backed by the directory):
the hub is switched to it for this module (jupyterhub_authenticator: oidc) and back to PAM after."""

from __future__ import annotations

import json

import pytest
from conftest import (
    HUB_SETTINGS,
    HUB_URL,
    IDP_CA,
    IDP_HOST,
    LABS_DOMAIN,
    _host,
    hub_client,
    run_playbook,
    session_ad,
    set_passwords,
    wait_for,
)

ISSUER = "https://idp.localhost:8444"
SECRET = "/etc/lemonldap-ng/condorlab-clients/condorlab-hub.secret"


@pytest.fixture(scope="module")
def oidc_hub(hub):
    switched = run_playbook("playbooks/jupyterhub.yml", "-e", "jupyterhub_authenticator=oidc", timeout=900)
    assert switched.returncode == 0, switched.stdout[-3000:] + switched.stderr[-2000:]
    yield hub
    back = run_playbook("playbooks/jupyterhub.yml", timeout=900)
    assert back.returncode == 0, back.stdout[-3000:] + back.stderr[-2000:]
    assert json.loads(hub.file(HUB_SETTINGS).content_string)["login"]["authenticator"] == "pam"


def test_the_provider_publishes_its_discovery_document_over_checked_tls(hub):
    ca = _host(IDP_HOST).file(IDP_CA).content_string
    hub.check_output(f"cat > /tmp/idp-ca.crt <<'EOF'\n{ca}\nEOF")
    url = f"{ISSUER}/.well-known/openid-configuration"
    # Python, as the hub: curl would take any *.localhost name for this host itself.
    fetch = "python3 -c 'import ssl, sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], context=ssl.create_default_context(cafile=sys.argv[2] or None)).read().decode())'"
    document = json.loads(hub.check_output(f"{fetch} {url} /tmp/idp-ca.crt"))
    assert document["issuer"] == ISSUER
    assert document["authorization_endpoint"] == f"{ISSUER}/oauth2/authorize"
    assert "client_secret_basic" in document["token_endpoint_auth_methods_supported"]
    # The provider's certificate is checked: with the system's CAs only, no answer.
    refused = hub.run(f"{fetch} {url} ''")
    assert refused.rc != 0 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused.stderr


def test_alice_logs_in_through_the_provider_and_starts_a_session(oidc_hub, outsider):
    hub = oidc_hub
    client = hub_client(outsider, hub, set_passwords(hub, ["alice"]), login="oidc")
    started = client("start", "alice", "180", json.dumps({"profile": "physics/small"}))
    try:
        assert started["login"] == 200, started
        assert started["oidc"]["provider_url"] == f"{ISSUER}/oauth2/authorize", "the browser went to the provider"
        assert "ready_after" in started, started
        ad = session_ad(hub, "alice")
        assert ad["AccountingGroup"] == "group_physics.alice" and ad["CondorlabGroup"] == "physics"
    finally:
        assert "stopped_after" in client("stop", "alice")


def test_a_wrong_password_stays_at_the_provider(oidc_hub, outsider):
    client = hub_client(outsider, oidc_hub, {"bob": "not-his-password"}, login="oidc")
    result = client("login", "bob")
    assert result["login"] == 401 and result["oidc"]["url"].startswith(ISSUER), result


def test_a_user_whose_groups_name_no_user_group_is_refused_with_a_message(oidc_hub, outsider):
    client = hub_client(outsider, oidc_hub, set_passwords(oidc_hub, ["kim"]), login="oidc")
    result = client("login", "kim")
    assert result["login"] == 403, result
    assert "not in any of the groups that may use this service" in result["oidc"]["text"], result


def test_the_client_secret_is_kept_from_files_the_hub_account_reads(oidc_hub):
    hub = oidc_hub
    secret = _host(IDP_HOST).file(SECRET).content_string.strip()
    assert len(secret) >= 32
    env = hub.file("/etc/jupyterhub/oidc.env")
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)
    assert env.content_string.strip() == f"OAUTH_CLIENT_SECRET={secret}"
    settings = hub.file(HUB_SETTINGS).content_string
    assert json.loads(settings)["login"]["authenticator"] == "oidc"
    assert secret not in settings and secret not in hub.file("/etc/jupyterhub/jupyterhub_config.py").content_string
    assert hub.run("su -s /bin/sh jupyterhub -c 'cat /etc/jupyterhub/oidc.env'").rc != 0
    assert wait_for(lambda: hub.run("systemctl is-active jupyterhub").stdout.strip() == "active", 30)


def test_a_lab_page_cannot_toss_the_login_state_and_alice_logs_in_as_herself(oidc_hub, outsider, chromium):
    """OAuthenticator's state cookie is the hub's: bob's lab page cannot plant one (login CSRF)."""
    from selenium.webdriver.common.by import By
    from test_attack_cookies import TOSS, WHO, hub_cookies

    passwords = set_passwords(oidc_hub, ["alice", "bob"])
    client = hub_client(outsider, oidc_hub, passwords, login="oidc")
    started = client("start", "bob", "180", json.dumps({"profile": "physics/small"}))
    try:
        assert "ready_after" in started, started
        chromium.get(f"https://bob.{LABS_DOMAIN}:8443/user/bob/api")
        assert '"version"' in chromium.page_source, chromium.page_source[:300]
        chromium.execute_async_script(
            TOSS,
            [
                f"oauthenticator-state=bob; domain={domain}; path={path}; secure"
                for domain in ("hub.localhost", ".hub.localhost", "localhost")
                for path in ("/", "/hub/")
            ],
        )
        assert not [c for c in hub_cookies(chromium) if c["name"] == "oauthenticator-state"], hub_cookies(chromium)
    finally:
        client("stop", "bob")

    # alice logs in through the provider in the same browser, and the hub knows her as alice.
    chromium.get(f"{HUB_URL}/hub/oauth_login?next=/hub/home")
    assert wait_for(lambda: chromium.current_url.startswith(ISSUER), 20), chromium.current_url
    state = [c for c in hub_cookies(chromium) if c["name"] == "oauthenticator-state"]
    assert state and all(c["secure"] and c["domain"] == "hub.localhost" for c in state), state
    chromium.find_element(By.NAME, "user").send_keys("alice")
    chromium.find_element(By.NAME, "password").send_keys(passwords["alice"])
    chromium.find_element(By.NAME, "password").submit()
    assert wait_for(lambda: chromium.current_url.startswith(f"{HUB_URL}/hub/"), 30), chromium.current_url
    chromium.get(f"{HUB_URL}/hub/home")
    assert '"name":"alice"' in chromium.execute_async_script(WHO).replace(" ", "")
