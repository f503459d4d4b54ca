"""Cookie tossing from a lab's origin: bob's lab page cannot take alice's hub session, nor lock her out.

The hub is https://hub.localhost:8443, every lab https://<user>.labs.localhost:8443:
another registrable domain, so a script in bob's lab can set no cookie the hub
receives. Driven as the attacker in headless Chromium: alice, logged in,
opens a page of bob's lab, whose script tosses bob's own login cookie and a
validly signed _xsrf for the hub's login form, both under every name and
domain a browser might accept; alice stays alice, her lab opens and she can
log in again.
"""

from __future__ import annotations

from conftest import HUB_URL, LABS_DOMAIN, chromium_login, wait_for

# Runs in bob's lab's origin: tries to set each cookie, then reports what its
# own origin holds. document.cookie ignores a cookie the browser refuses.
TOSS = """
const done = arguments[arguments.length - 1];
const tossed = arguments[0];
for (const line of tossed) { document.cookie = line; }
done(document.cookie);
"""

# What a page of the hub reads about the browser's user, with its cookies.
WHO = """
const done = arguments[arguments.length - 1];
// The page's own _xsrf cookie, sent back as a header as JupyterHub's pages do.
const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || "";
fetch("/hub/api/user", {credentials: "include", headers: {"X-XSRFToken": xsrf}})
  .then(async r => done(r.status + " " + await r.text()))
  .catch(e => done("error " + e));
"""


def _all_cookies(driver) -> list[dict]:
    """Every cookie the browser holds, for every site (the DevTools protocol)."""
    return driver.execute_cdp_cmd("Network.getAllCookies", {})["cookies"]


def hub_cookies(driver) -> list[dict]:
    return [c for c in _all_cookies(driver) if c["domain"].lstrip(".") in ("hub.localhost", "localhost")]


def _who(driver) -> str:
    driver.get(f"{HUB_URL}/hub/home")
    return driver.execute_async_script(WHO)


def _set_cookies(headers: str) -> list[tuple[str, dict]]:
    """(name, attributes) of each Set-Cookie header, attribute names in lower case."""
    found = []
    for line in headers.splitlines():
        if not line.lower().startswith("set-cookie:"):
            continue
        first, *attrs = [part.strip() for part in line.split(":", 1)[1].split(";")]
        pairs = dict(a.partition("=")[::2] for a in attrs if a)
        found.append((first.split("=", 1)[0], {k.lower(): v for k, v in pairs.items()}))
    return found


def test_the_hub_sends_host_only_secure_cookies(outsider, passwords, browser):
    """As the hub answers: __Host- login cookie, session id on the hub's name only, _xsrf Secure."""
    jar = "/tmp/cookie-attack.jar"
    # curl takes every *.localhost name for this host itself: connect to the hub by its address.
    curl = (
        f"curl -sS --cacert /tmp/condorlab-public-ca.crt --connect-to hub.localhost:8443:hub:8443 "
        f"-c {jar} -b {jar} -o /dev/null -D -"
    )
    outsider.check_output(f"rm -f {jar}")
    page = _set_cookies(outsider.check_output(f"{curl} {HUB_URL}/hub/login"))
    xsrf = [attrs for name, attrs in page if name == "_xsrf"]
    assert xsrf and all("secure" in attrs for attrs in xsrf), page
    token = outsider.check_output(f"awk '$6 == \"_xsrf\" {{print $7}}' {jar}").strip()
    logged_in = _set_cookies(
        outsider.check_output(
            f"printf %s '{passwords['alice']}' | {curl} --data-urlencode username=alice "
            f"--data-urlencode password@- --data-urlencode _xsrf={token} {HUB_URL}/hub/login"
        )
    )
    names = [name for name, _ in logged_in]
    assert "__Host-jupyterhub-hub-login" in names and "jupyterhub-hub-login" not in names, logged_in
    for name, attrs in logged_in:
        assert "secure" in attrs, (name, attrs)
        if name.startswith("__Host-"):
            assert attrs.get("path") == "/" and "domain" not in attrs, (name, attrs)
        if name == "jupyterhub-session-id":
            # The session id goes to the hub's own name, never to a domain the labs share.
            assert attrs.get("domain", "").lstrip(".") == "hub.localhost", (name, attrs)
    assert "jupyterhub-session-id" in names, logged_in


def test_bob_s_lab_cannot_toss_cookies_to_the_hub(chromium, passwords, bob_lab, browser):
    # bob's own login cookie: what he would toss to make alice's browser his.
    chromium_login(chromium, "bob", passwords["bob"])
    bob_login = next(c for c in hub_cookies(chromium) if "jupyterhub-hub-login" in c["name"])
    bob_xsrf = next(c for c in hub_cookies(chromium) if c["name"] == "_xsrf")
    chromium.execute_cdp_cmd("Network.clearBrowserCookies", {})

    chromium_login(chromium, "alice", passwords["alice"])
    assert '"name":"alice"' in _who(chromium).replace(" ", "")
    before = {(c["name"], c["domain"], c["path"], c["value"]) for c in hub_cookies(chromium)}

    # bob's page, in alice's browser: his lab's origin (/api answers anybody).
    chromium.get(f"https://bob.{LABS_DOMAIN}:8443/user/bob/api")
    assert '"version"' in chromium.page_source, chromium.page_source[:300]
    year = 365 * 24 * 3600
    tossed = []
    for domain in ("hub.localhost", ".hub.localhost", "localhost", ".localhost"):
        tossed += [
            f"jupyterhub-hub-login={bob_login['value']}; domain={domain}; path=/hub/; secure",
            f"{bob_login['name']}={bob_login['value']}; domain={domain}; path=/; secure",
            f"_xsrf={bob_xsrf['value']}; domain={domain}; path=/hub/login; max-age={year}; secure",
            f"_xsrf={bob_xsrf['value']}; domain={domain}; path=/hub/; max-age={year}; secure",
            f"jupyterhub-session-id=bob; domain={domain}; path=/; secure",
            f"oauthenticator-state=bob; domain={domain}; path=/hub/; secure",
        ]
    # A control the browser accepts: the labs' own domain is one site.
    tossed.append(f"condorlab-probe=bob; domain={LABS_DOMAIN}; path=/; secure")
    chromium.execute_async_script(TOSS, tossed)

    after = _all_cookies(chromium)
    probe = [c for c in after if c["name"] == "condorlab-probe"]
    assert probe and probe[0]["domain"].lstrip(".") == LABS_DOMAIN, after
    hub_now = {(c["name"], c["domain"], c["path"], c["value"]) for c in hub_cookies(chromium)}
    assert hub_now == before, {"tossed into the hub's site": sorted(hub_now - before)}
    assert not any(c["value"] in (bob_login["value"], "bob") for c in hub_cookies(chromium)), after

    # alice is still alice on the hub, and her own lab opens for her.
    assert '"name":"alice"' in _who(chromium).replace(" ", "")
    started = browser("start", "alice", "180")
    assert "ready_after" in started, started
    try:
        # Her lab's page (the hub's OAuth gives her browser the lab's cookie), then its API.
        lab = f"https://alice.{LABS_DOMAIN}:8443/user/alice"
        chromium.get(f"{lab}/lab")
        assert wait_for(lambda: chromium.current_url.startswith(f"{lab}/lab"), 20), chromium.current_url
        chromium.get(f"{lab}/api/status")
        assert "last_activity" in chromium.page_source, chromium.page_source[:500]
    finally:
        browser("stop", "alice")

    # She can log out and in again: no tossed _xsrf spoils the login form.
    chromium.get(f"{HUB_URL}/hub/logout")
    chromium_login(chromium, "alice", passwords["alice"])
    assert '"name":"alice"' in _who(chromium).replace(" ", "")
    assert "Login form invalid" not in chromium.page_source
