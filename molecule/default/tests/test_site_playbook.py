"""site.yml run again from the controller, after every other test file (conftest.EDITS_THE_SITE):
preflight refusals, then one inventory edit (a rotated pool key and a new user group) and check mode
on the edited site while a session of the new group runs."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import hub_client, run_playbook, session_ad, session_records, set_passwords, wait_for

POOL_HOSTS = ("cm", "hub", "wn1", "wn2")
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def site(*args: str) -> subprocess.CompletedProcess:
    return run_playbook("site.yml", *args, timeout=900)


def recap(output: str) -> dict[str, dict[str, int]]:
    return {
        host: {"ok": int(ok), "changed": int(changed), "unreachable": int(unr), "failed": int(failed)}
        for host, ok, changed, unr, failed in RECAP.findall(output)
    }


# Each bad setting and the message the preflight stops with.
BAD_SETTINGS = [
    ("htcondor_signing_key_b64=CHANGEME", "htcondor_signing_key_b64 holds a placeholder"),
    ("htcondor_trust_domain='bad domain!'", "htcondor_trust_domain is 'bad domain!'"),
    ("htcondor_manage_pool=false", "htcondor_signing_key_b64 is empty but htcondor_manage_pool is false"),
    ('{"htcondor_config_overrides": {"BAD NAME": 1}}', "'BAD NAME' is not a valid HTCondor knob name"),
    (
        '{"local_users_accounts": [{"name": "alice", "uid": 2001}, {"name": "eve", "uid": 2001}]}',
        "uid 2001 is also the uid of alice",
    ),
    ('{"htcondor_host_roles": ["scheduler"]}', "value of htcondor_host_roles must be one or more of"),
    (
        "condorlab_directory_base_dn=o=condorlab",
        "condorlab_directory_base_dn is 'o=condorlab'; set it to the directory's naming",
    ),
    ("condorlab_directory_uri=ldap://cm", 'the directory is "ldap://cm" (condorlab_directory_uri)'),
    # A shared fact set under a role's own name, as before it was the site's.
    ("jupyterhub_public_port=9443", "sets jupyterhub_public_port, which the plays"),
    # The direct transport's settings: refused, not ignored.
    (
        '{"condorlab_session_transport": "direct", "condorlab_session_port_range": [50000, 50999]}',
        "the inventory sets condorlab_session_port_range, condorlab_session_transport,",
    ),
    (
        '{"jupyterhub_authenticator": "oidc", "condorlab_oidc": {"client_id": "condorlab-hub", '
        '"issuer": "http://idp", "callback_url": "https://hub.localhost:8443/hub/oauth_callback"}}',
        "jupyterhub_authenticator is oidc but condorlab_oidc lacks client_id, an https:// issuer",
    ),
    (
        '{"directory_users": [{"name": "zed", "uid": 2099, "groups": ["nope"]}]}',
        "directory_users[0] (zed) is in group 'nope', which is not in directory_groups",
    ),
    ("jupyterhub_public_tls_cert=/etc/ssl/certs/hub.pem", "only one of jupyterhub_public_tls_cert"),
    (
        '{"firewall_rules": [{"comment": "db", "proto": "tcp", "ports": [70000], "sources": ["any"]}]}',
        "rule 'db': port 70000 is not a port number",
    ),
    # Labs under the hub's own registrable domain could toss cookies to the hub.
    ("jupyterhub_labs_domain=labs.hub.localhost", "a registrable domain apart from the hub"),
    ('{"firewall_dns_name": "wn 1"}', "firewall_dns_name 'wn 1' is not a DNS name"),
    ("prometheus_retention=forever", "prometheus_retention is not a Prometheus duration"),
    ('{"prometheus_web_extra_sources": ["wn2"]}', "prometheus_web_sources holds wn2, which lets"),
    (
        '{"condorlab_user_groups": [{"name": "physics", "unix_groups": ["physics"], '
        '"profiles": [{"name": "huge", "cpus": 64, "memory": "1GB", "walltime": "1h"}]}]}',
        "cpus is 64 but an execute node has 2",
    ),
    # The site-level variables' argument spec (roles/preflight/meta/argument_specs.yml).
    (
        '{"condorlab_execute_node_size": {"cpus": "many", "memory": "2GB"}}',
        "argument 'cpus' is of type str found in 'condorlab_execute_node_size'",
    ),
    (
        '{"condorlab_user_groups": [{"name": "physics", "unix_groups": ["physics"], '
        '"profiles": [{"name": "s", "cpus": 1, "memory": "1GB", "walltime": "1h", "cores": 2}]}]}',
        "condorlab_user_groups.profiles.cores",
    ),
]
MARKER = "/etc/condor/config.d/20-condorlab.config"


@pytest.fixture(scope="module")
def refused(cm) -> dict[str, tuple[subprocess.CompletedProcess, float, float]]:
    """site.yml run with each bad setting, four at a time (each stops in its preflight play): extra vars ->
    (the run, the marker's mtime before, after)."""
    before = cm.file(MARKER).mtime

    def one(extra_vars: str) -> tuple[subprocess.CompletedProcess, float, float]:
        return site("-e", extra_vars), before, cm.file(MARKER).mtime

    settings = [extra_vars for extra_vars, _ in BAD_SETTINGS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(settings, pool.map(one, settings), strict=True))


@pytest.mark.parametrize(("extra_vars", "message"), BAD_SETTINGS)
def test_bad_settings_stop_before_any_host_changes(extra_vars, message, refused):
    run, before, after = refused[extra_vars]
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert message in output, output[-3000:]
    stats = recap(run.stdout)
    assert all(s["changed"] == 0 for s in stats.values()), stats
    # The preflight play stops the run: no later play starts.
    assert "PLAY [Create local users" not in run.stdout
    assert "PLAY [Firewall the condorlab hosts]" not in run.stdout
    assert "PLAY [Configure the HTCondor pool]" not in run.stdout
    assert after == before


# ---- one inventory edit: a pool key from the vault and a new user group ----------------

NEW_GROUP = {
    # A group the directory does not have, with local accounts (the local_users
    # role, for sites without a directory) next to the directory's users.
    "local_users_groups": [{"name": "gw", "gid": 3003}],
    "local_users_accounts": [{"name": "dave", "uid": 2004, "groups": ["gw"], "comment": "Dave (gravitational waves)"}],
    "condorlab_user_groups": [
        {
            "name": "physics",
            "unix_groups": ["physics"],
            "quota": {"dynamic": 0.4},
            "profiles": [
                {"name": "small", "cpus": 1, "memory": "512MB", "walltime": "2h"},
                {"name": "double", "cpus": 2, "memory": "1GB", "walltime": "1h"},
            ],
        },
        {
            "name": "astro",
            "unix_groups": ["astro"],
            "accounting_group": "group_astro",
            "quota": {"dynamic": 0.4},
            "profiles": [{"name": "quick", "cpus": 1, "memory": "384MB", "walltime": "30m"}],
        },
        {
            "name": "gw",
            "unix_groups": ["gw"],
            "quota": {"dynamic": 0.2},
            "profiles": [{"name": "blink", "label": "One-minute lab", "cpus": 1, "memory": "256MB", "walltime": "1m"}],
        },
    ],
}


@pytest.fixture(scope="module")
def rotated_key() -> bytes:
    """The pool signing key the edit puts in the inventory (as from Ansible Vault)."""
    return secrets.token_bytes(48)


def edited_inventory(raw: bytes) -> str:
    """The extra variables of the edit: ``raw`` as the pool signing key, and the new group."""
    return json.dumps({**NEW_GROUP, "htcondor_signing_key_b64": base64.b64encode(raw).decode()})


@pytest.fixture(scope="module")
def edited(cm, hub, execute_nodes, rotated_key) -> dict:
    """site.yml run once with the edited inventory: the run, each host's daemon token before, and when."""
    hosts = [cm, hub, *execute_nodes]
    old_tokens = {h: h.file("/etc/condor/tokens.d/condorlab-daemon").sha256sum for h in hosts}
    rotated_at = int(time.time())
    run = site("-e", edited_inventory(rotated_key))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return {"run": run, "old_tokens": old_tokens, "rotated_at": rotated_at}


@pytest.fixture(scope="module")
def check_run(edited, rotated_key):
    """site.yml in check mode with the edited inventory, run in the background while the tests below
    use the site (as an administrator checks a live site): a future of the run."""
    with ThreadPoolExecutor(max_workers=1) as background:
        yield background.submit(site, "--check", "-e", edited_inventory(rotated_key))


def test_a_signing_key_from_the_inventory_replaces_the_pool_key(cm, hub, execute_nodes, rotated_key, edited):
    """Key rotation: a vault-supplied key reaches every host, tokens are re-minted, the pool works on."""
    raw, run = rotated_key, edited["run"]
    key = base64.b64encode(raw).decode()
    assert key not in run.stdout + run.stderr, "the key must never be printed"
    assert set(recap(run.stdout)) == set(POOL_HOSTS)
    for host in (cm, hub, *execute_nodes):
        assert host.file("/etc/condor/passwords.d/POOL").sha256sum == hashlib.sha256(raw).hexdigest()
        assert host.file("/etc/condor/tokens.d/condorlab-daemon").sha256sum != edited["old_tokens"][host]

    def fresh_startd_ads():
        ads = json.loads(cm.check_output("condor_status -json -attributes Machine,LastHeardFrom") or "[]")
        return {ad["Machine"].split(".")[0] for ad in ads if ad["LastHeardFrom"] >= edited["rotated_at"]}

    assert wait_for(lambda: fresh_startd_ads() >= {"wn1", "wn2"}, timeout=90), (
        "execute nodes no longer reach the collector"
    )
    schedd = hub.run("condor_q -total")
    assert schedd.rc == 0, schedd.stderr


def test_a_new_group_works_after_an_inventory_edit_and_a_converge(edited, check_run, hub, cm, outsider):
    assert "group_gw" in cm.check_output("condor_config_val GROUP_NAMES")
    assert "* dave group_gw" in hub.file("/etc/condor/condorlab-accounting.map").content_string

    client = hub_client(outsider, hub, set_passwords(hub, ["dave"]))

    def dave(command: str, *args: str) -> dict:
        return client(command, "dave", *args)

    form = dave("get", "/hub/spawn")["text"]
    assert 'value="gw/blink"' in form and "physics/" not in form and "astro/" not in form
    started = dave("start", "180")
    assert "ready_after" in started, started
    ad = session_ad(hub, "dave")
    assert ad["AcctGroup"] == "group_gw" and ad["CondorlabWalltime"] == 60
    assert "> 360" in hub.check_output(f"condor_q {ad['ClusterId']} -af:r PeriodicHold"), "HTCondor's backstop"
    body = '{"type": "file", "format": "text", "content": "kept"}'
    saved = dave("put", "/user/dave/api/contents/before-walltime.txt", body)
    assert saved["status"] in (200, 201), saved

    # At the profile's walltime the hub ends the session as a stop does: the
    # job ends normally and dave's work comes back (he has no shared area).
    def ended():
        model = json.loads(dave("get", "/hub/api/users/dave")["text"])
        return not model.get("servers") and not model.get("pending")

    assert wait_for(ended, timeout=180, interval=5), "the one-minute session did not end"
    assert wait_for(
        lambda: hub.run(f"condor_history {ad['ClusterId']} -limit 1 -af ExitCode").stdout.strip() == "0", 60
    )
    assert hub.file("/home/dave/condorlab/before-walltime.txt").content_string == "kept"
    last = session_records(hub)[-1]
    assert (last["user"], last["event"], last["reason"]) == ("dave", "stop", "walltime")


def test_check_mode_on_the_edited_site_reports_no_change(check_run):
    """The site as the edit left it, the edit in the inventory: site.yml would change nothing more
    (a second run after the edit), and check mode runs through on a converged site in use."""
    run = check_run.result()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    stats = recap(run.stdout)
    assert set(stats) == set(POOL_HOSTS)
    assert all(s["changed"] == 0 and s["failed"] == 0 for s in stats.values()), stats
