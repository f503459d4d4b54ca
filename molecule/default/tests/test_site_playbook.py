"""site.yml run again from the controller: check mode and preflight refusals."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
POOL_HOSTS = ("cm", "hub", "wn1", "wn2")
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def site(*args: str) -> subprocess.CompletedProcess:
    inventory = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    return subprocess.run(
        ["ansible-playbook", "-i", str(inventory), "site.yml", *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def recap(output: str) -> dict[str, dict[str, int]]:
    return {
        host: {"ok": int(ok), "changed": int(changed), "unreachable": int(unr), "failed": int(failed)}
        for host, ok, changed, unr, failed in RECAP.findall(output)
    }


def test_check_mode_on_the_converged_site_reports_no_change():
    run = site("--check")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    stats = recap(run.stdout)
    assert set(stats) == set(POOL_HOSTS)
    assert all(s["changed"] == 0 and s["failed"] == 0 for s in stats.values()), stats


@pytest.mark.parametrize(
    ("extra_vars", "message"),
    [
        ("htcondor_signing_key_b64=CHANGEME", "htcondor_signing_key_b64 holds a placeholder"),
        ("htcondor_trust_domain='bad domain!'", "htcondor_trust_domain is 'bad domain!'"),
        ("htcondor_manage_pool=false", "htcondor_signing_key_b64 is empty but htcondor_manage_pool is false"),
        ('{"htcondor_config_overrides": {"BAD NAME": 1}}', "'BAD NAME' is not a valid HTCondor knob name"),
        (
            '{"local_users_accounts": [{"name": "alice", "uid": 2001}, {"name": "eve", "uid": 2001}]}',
            "uid 2001 is also the uid of alice",
        ),
        ('{"htcondor_host_roles": ["scheduler"]}', "value of htcondor_host_roles must be one or more of"),
    ],
)
def test_bad_settings_stop_before_any_host_changes(extra_vars, message, cm):
    marker = "/etc/condor/config.d/20-condorlab.config"
    before = cm.file(marker).mtime
    run = site("-e", extra_vars)
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert message in output, output[-3000:]
    stats = recap(run.stdout)
    assert all(s["changed"] == 0 for s in stats.values()), stats
    # The preflight play stops the run: no later play starts.
    assert "PLAY [Create local users" not in run.stdout
    assert "PLAY [Configure the HTCondor pool]" not in run.stdout
    assert cm.file(marker).mtime == before
