"""Access to the scenario's hosts (podman containers named after the platforms)."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import testinfra
from testinfra.backend.podman import PodmanBackend

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))


def _contract():
    """The hub package's contract module (standard library only), from the project's sources."""
    spec = importlib.util.spec_from_file_location("condorlab_contract", PROJECT / "hub" / "condorlab" / "contract.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


PUBLIC_CA = "/etc/condorlab/public-tls/ca.crt"
# The hub's settings file, which the jupyterhub role writes.
HUB_SETTINGS = _contract().HUB_SETTINGS_FILE
TEST_USERS = ("alice", "bob", "carol")
# The hub as a browser reaches it (chromium maps the names to the hub).
HUB_URL = "https://hub.localhost:8443"
# Where the labs live (jupyterhub_labs_domain): https://<user>.labs.localhost:8443.
LABS_DOMAIN = "labs.localhost"


# The tests that edit the site's inventory and run site.yml again run last, so
# that every other test meets the test bed as its inventory describes it.
EDITS_THE_SITE = "test_site_playbook.py"


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: item.nodeid.split("::")[0].endswith(EDITS_THE_SITE))


# Each test file's time (its tests' setup, call and teardown), for the run's
# phase table (testbed/phases.py; CONDORLAB_PHASES names the file).
_FILE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    name = report.nodeid.split("::")[0].rsplit("/", 1)[-1]
    _FILE_SECONDS[name] = _FILE_SECONDS.get(name, 0.0) + report.duration


def pytest_sessionfinish(session):
    path = os.environ.get("CONDORLAB_PHASES")
    if path and _FILE_SECONDS:
        with open(path, "a") as handle:
            handle.writelines(f"verify: {name}\t{seconds:.1f}\n" for name, seconds in _FILE_SECONDS.items())
        _FILE_SECONDS.clear()  # written once, however often the hook is registered


# What a failed test's report carries, host by host: the hub's journal (its
# successful requests left out, which a polling test floods it with), the
# pool's slots and queue, the tails of the daemons' logs and the firewall's
# host sets. Commands that fail (a host the test broke) say so and are skipped.
_QUIET = r"log:192\] 20[0-9] |_xsrf_utils|\[ConfigProxy\] info: 20[0-9] "
_FAILURE_DIAGNOSTICS = {
    "hub": (
        "journalctl -u jupyterhub -u condorlab-proxy --since -{since}s --no-pager -o short-precise"
        f" | grep -v -E '{_QUIET}' | tail -n 120",
        "condor_status -af Name State Activity Cpus MyAddress",
        "condor_q -all -af ClusterId ProcId Owner JobStatus RemoteHost HoldReason",
        "tail -n 40 /var/log/condor/SchedLog",
        "nft list sets",
    ),
    "cm": ("tail -n 30 /var/log/condor/CollectorLog", "tail -n 30 /var/log/condor/NegotiatorLog", "nft list sets"),
    "wn1": ("tail -n 30 /var/log/condor/StartLog",),
    "wn2": ("tail -n 30 /var/log/condor/StartLog",),
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that failed, or whose fixture did, reports what the hub and the pool did meanwhile."""
    outcome = yield
    report = outcome.get_result()
    if report.when in ("setup", "call") and report.failed:
        since = int(report.duration) + 30
        for name, commands in _FAILURE_DIAGNOSTICS.items():
            lines = []
            for command in commands:
                command = command.format(since=since)
                try:
                    output = _host(name).run(command).stdout
                except Exception as error:  # the test may have broken this host's container
                    output = f"(failed: {error})\n"
                lines.append(f"$ {command}\n{output}")
            report.sections.append((f"{name} when the test failed", "".join(lines)))


def _load_connection_plugin():
    """The test bed's podman connection plugin, whose container_entry the hosts below use too."""
    path = PROJECT / "testbed" / "connection_plugins" / "podman.py"
    spec = importlib.util.spec_from_file_location("condorlab_testbed_podman", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_PODMAN = _load_connection_plugin()


class _ContainerBackend(PodmanBackend):
    """testinfra's podman backend, entering the container as the test bed's connection plugin does
    (nsenter, as root) and falling back to podman exec where that cannot be done."""

    def run(self, command: str, *args: str, **kwargs):
        entry = None if self.user is not None else _PODMAN.container_entry(self.name)
        if entry is None:
            return super().run(command, *args, **kwargs)
        cmd = self.get_command(command, *args)
        out = self.run_local(" ".join(["%s"] * (len(entry) + 3)), *entry, "/bin/sh", "-c", cmd)
        out.command = self.encode(cmd)
        return out


def _host(name: str):
    # The scenario's containers carry the platform names; a command per call is much
    # faster than a module run per command.
    backend = _ContainerBackend(name)
    host = testinfra.host.Host(backend)
    backend.set_host(host)
    return host


@pytest.fixture(scope="session")
def cm():
    return _host("cm")


@pytest.fixture(scope="session")
def hub():
    return _host("hub")


@pytest.fixture(scope="session")
def execute_nodes():
    return [_host("wn1"), _host("wn2")]


@pytest.fixture(scope="session")
def outsider():
    return _host("outsider")


def wait_for(probe, timeout: float, interval: float = 1.0):
    """Call ``probe`` until it returns something truthy; return that or the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def session_ad(hub, user: str) -> dict:
    """The user's session job as the schedd sees it ({} without one)."""
    out = hub.check_output(
        f"condor_q -all -json -constraint 'Owner == \"{user}\" && CondorlabSession =?= true' "
        "-attributes ClusterId,AcctGroup,AccountingGroup,RequestCpus,RequestMemory,CondorlabWalltime,"
        "CondorlabGroup,CondorlabProfile"
    )
    ads = json.loads(out) if out.strip() else []
    return ads[0] if ads else {}


# The hub's records of session starts and stops and of the pool tokens it gave labs (jupyterhub role).
SESSION_RECORDS = "/var/lib/jupyterhub/accounting/sessions.jsonl"


def session_records(hub, user: str | None = None) -> list[dict]:
    """The session starts and stops the hub recorded, of one user or of all (not the ids of the pool
    tokens it gave)."""
    lines = hub.file(SESSION_RECORDS).content_string.splitlines()
    return [
        r
        for r in map(json.loads, lines)
        if r.get("event") in ("start", "stop") and (user is None or r.get("user") == user)
    ]


DIRECTORY_HOST = "cm"  # the container of the test bed's slapd (the `directory` group)


def set_passwords(hub, users) -> dict[str, str]:
    """Fresh random passwords for test users (PAM checks them for real).

    Users of the directory get theirs there (testbed/directory-passwords.sh),
    local accounts (the local_users role) with chpasswd on the hub.
    """
    chosen = {user: secrets.token_urlsafe(12) for user in users}
    local = {user for user in users if hub.run(f"grep -q '^{user}:' /etc/passwd").rc == 0}
    in_directory = "".join(f"{user}:{password}\n" for user, password in chosen.items() if user not in local)
    if in_directory:
        subprocess.run(
            [str(PROJECT / "testbed" / "directory-passwords.sh"), DIRECTORY_HOST],
            input=in_directory,
            text=True,
            check=True,
        )
    if local:
        lines = "\n".join(f"{user}:{chosen[user]}" for user in sorted(local))
        hub.check_output(f"chpasswd <<'EOF'\n{lines}\nEOF")
    return chosen


IDP_HOST = "cm"  # the container of the test bed's OpenID Connect provider (the `identity_provider` group)
IDP_CA = "/etc/condorlab/idp-tls/ca.crt"  # the identity_provider role's own CA
IDP_SERVER_CERT = "/etc/condorlab/idp-tls/server.crt"


def hub_client(outsider, hub, passwords: dict[str, str], login: str = "pam"):
    """Runs hubclient.py on the outsider host, which reaches the hub over HTTPS, trusting the test bed's CA.

    With login="oidc" it logs in through the test bed's OpenID Connect provider (on cm) as a browser does.
    """
    source = base64.b64encode((Path(__file__).parent / "hubclient.py").read_bytes()).decode()
    outsider.check_output(f"echo {source} | base64 -d > /tmp/hubclient.py")
    ca = base64.b64encode(hub.file(PUBLIC_CA).content).decode()
    outsider.check_output(f"echo {ca} | base64 -d > /tmp/condorlab-public-ca.crt")
    if login == "oidc":
        idp_ca = base64.b64encode(_host(IDP_HOST).file(IDP_CA).content).decode()
        outsider.check_output(f"echo {idp_ca} | base64 -d > /tmp/condorlab-idp-ca.crt")

    def quoted(command: str, user: str, *args: str) -> str:
        return " ".join("'" + a.replace("'", "'\\''") + "'" for a in (command, user, passwords[user], *args))

    env = f"CONDORLAB_LOGIN={login}"

    def resolvable(result: dict) -> dict:
        """A started lab's origin resolves on the outsider, as a site's wildcard DNS entry would make it.

        JupyterHub encodes a user name that is not a DNS label (erin.lee ->
        u-erinlee--<hash>.labs.localhost), which the test bed's hosts file cannot know beforehand.
        """
        host = urlsplit((result.get("server") or {}).get("url") or "").hostname
        if host and host.endswith(f".{LABS_DOMAIN}"):
            outsider.check_output(
                f"grep -q ' {host}$' /etc/hosts || "
                f"echo \"$(getent hosts hub.localhost | awk '{{print $1}}') {host}\" >> /etc/hosts"
            )
        return result

    def run(command: str, user: str, *args: str) -> dict:
        return resolvable(
            json.loads(outsider.check_output(f"{env} python3 /tmp/hubclient.py {quoted(command, user, *args)}"))
        )

    def background(command: str, user: str, *args: str):
        """Start a client command and go on; returns (what it wrote to stderr so far, its result within a timeout).

        The result is read once the command has finished (a marker file), never half written.
        """
        out = f"/tmp/hubclient-{secrets.token_hex(4)}"
        script = (
            f"{env} python3 /tmp/hubclient.py {quoted(command, user, *args)} > {out}.json 2> {out}.err\n"
            f"touch {out}.done\n"
        )
        outsider.check_output(f"echo {base64.b64encode(script.encode()).decode()} | base64 -d > {out}.sh")
        outsider.check_output(f"setsid nohup sh {out}.sh < /dev/null > /dev/null 2>&1 &")

        def said() -> str:
            return outsider.run(f"cat {out}.err").stdout

        def result(timeout: float) -> dict:
            finished = wait_for(lambda: outsider.run(f"test -e {out}.done").rc == 0, timeout, interval=1)
            assert finished, f"hubclient {command} {user} gave no result in {timeout} s: {said()[-3000:]}"
            text = outsider.file(f"{out}.json").content_string
            assert text.strip(), f"hubclient {command} {user} failed: {said()[-3000:]}"
            return resolvable(json.loads(text))

        return said, result

    run.background = background
    return run


@pytest.fixture(scope="module")
def passwords(hub):
    return set_passwords(hub, TEST_USERS)


@pytest.fixture(scope="module")
def browser(outsider, hub, passwords):
    return hub_client(outsider, hub, passwords)


@pytest.fixture
def bob_lab(browser):
    """bob's lab, running for the test (the page an attacker serves from his own origin)."""
    started = browser("start", "bob", "180")
    assert "ready_after" in started, started
    yield
    browser("stop", "bob")


def run_playbook(playbook: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """ansible-playbook from the project directory against the scenario's inventory."""
    inventory = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    return subprocess.run(
        ["ansible-playbook", "-i", str(inventory), playbook, *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def chromium(hub):
    """Headless Chromium on this machine, reaching the test bed's hub by its public names."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail("Debian's chromium and chromium-driver are needed (make deps installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    address = hub.check_output("hostname -I").split()[0]
    spki_of = (
        "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64"
    )
    spki = hub.check_output(spki_of.format("/etc/condorlab/public-tls/server.crt"))
    # The identity provider (on cm) as the browser reaches it: https://idp.localhost:8444.
    idp = _host(IDP_HOST)
    idp_address = idp.check_output("hostname -I").split()[0]
    idp_spki = idp.check_output(spki_of.format(IDP_SERVER_CERT))
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--host-resolver-rules=MAP hub.localhost {address}, MAP *.{LABS_DOMAIN} {address}, "
        f"MAP idp.localhost {idp_address}",
        # Trust exactly the test bed's public keys (the hub's, the provider's), nothing else.
        f"--ignore-certificate-errors-spki-list={spki},{idp_spki}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def chromium_login(driver, user: str, password: str) -> None:
    """Log in to the hub in the browser, through its login form."""
    from selenium.webdriver.common.by import By

    driver.get(f"{HUB_URL}/hub/login")
    driver.find_element(By.ID, "username_input").send_keys(user)
    driver.find_element(By.ID, "password_input").send_keys(password)
    driver.find_element(By.ID, "login_submit").click()
    assert wait_for(lambda: "/hub/login" not in driver.current_url, 20), driver.current_url
