"""site.yml run again from the controller: preflight refusals, a key rotation, then check mode."""

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
from conftest import run_playbook, wait_for

POOL_HOSTS = ("cm", "hub", "wn1", "wn2")
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def site(*args: str) -> subprocess.CompletedProcess:
    return run_playbook("site.yml", *args)


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


@pytest.fixture(scope="module")
def rotated_key() -> bytes:
    """The pool signing key the rotation below puts in the inventory (as from Ansible Vault)."""
    return secrets.token_bytes(48)


def with_key(raw: bytes) -> str:
    """The extra variables that put ``raw`` in the inventory as the pool signing key."""
    return json.dumps({"htcondor_signing_key_b64": base64.b64encode(raw).decode()})


def test_a_signing_key_from_the_inventory_replaces_the_pool_key(cm, hub, execute_nodes, rotated_key):
    """Key rotation: a vault-supplied key reaches every host, tokens are re-minted, the pool works on."""
    raw = rotated_key
    key = base64.b64encode(raw).decode()
    hosts = [cm, hub, *execute_nodes]
    old_tokens = {h: h.file("/etc/condor/tokens.d/condorlab-daemon").sha256sum for h in hosts}
    rotated_at = int(time.time())

    run = site("-e", with_key(raw))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert key not in run.stdout + run.stderr, "the key must never be printed"
    assert set(recap(run.stdout)) == set(POOL_HOSTS)
    for host in hosts:
        assert host.file("/etc/condor/passwords.d/POOL").sha256sum == hashlib.sha256(raw).hexdigest()
        assert host.file("/etc/condor/tokens.d/condorlab-daemon").sha256sum != old_tokens[host]

    def fresh_startd_ads():
        ads = json.loads(cm.check_output("condor_status -json -attributes Machine,LastHeardFrom") or "[]")
        return {ad["Machine"].split(".")[0] for ad in ads if ad["LastHeardFrom"] >= rotated_at}

    assert wait_for(lambda: fresh_startd_ads() >= {"wn1", "wn2"}, timeout=90), (
        "execute nodes no longer reach the collector"
    )
    schedd = hub.run("condor_q -total")
    assert schedd.rc == 0, schedd.stderr


def test_check_mode_on_the_converged_site_reports_no_change(rotated_key):
    """The site as the rotation left it, its key in the inventory: site.yml would change nothing more
    (a second run after the rotation), and check mode runs through on a converged site."""
    run = site("--check", "-e", with_key(rotated_key))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    stats = recap(run.stdout)
    assert set(stats) == set(POOL_HOSTS)
    assert all(s["changed"] == 0 and s["failed"] == 0 for s in stats.values()), stats
