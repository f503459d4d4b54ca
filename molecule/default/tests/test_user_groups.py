"""User groups from the inventory: profiles, limits, accounting groups and the accounting report
(a group added by an inventory edit alone: test_site_playbook.py)."""

from __future__ import annotations

import csv
import io
import json
import re
import struct
import time
from urllib.parse import urlsplit

import pytest
from conftest import hub_client, run_playbook, session_ad, session_records, set_passwords, wait_for


def test_each_user_sees_only_their_groups_profiles(browser):
    alice = browser("get", "alice", "/hub/spawn")["text"]
    assert 'value="physics/small"' in alice and 'value="physics/double"' in alice
    assert "astro/" not in alice
    carol = browser("get", "carol", "/hub/spawn")["text"]
    assert 'value="astro/quick"' in carol
    assert "physics/" not in carol


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"profile": "physics/small", "cpus": 2}, "cpus 2 is outside profile physics/small"),
        ({"profile": "physics/double", "memory": "4GB"}, "memory 4096 MB is above profile physics/double"),
        ({"profile": "astro/quick"}, "is not one of your groups' profiles"),
        ({"profile": "physics/small", "accounting_group": "group_astro"}, "unknown start option(s) accounting_group"),
    ],
    ids=["too-many-cpus", "too-much-memory", "another-group-s-profile", "another-accounting-group"],
)
def test_a_request_outside_the_group_s_limits_is_refused(browser, hub, options, message):
    result = browser("start", "alice", "30", json.dumps(options))
    assert result["start_status"] == 400, result
    assert message in result["start_text"], result
    assert session_ad(hub, "alice") == {}, "no job was submitted"


def test_the_access_point_refuses_another_accounting_group_from_the_user(hub):
    submit = hub.run(
        "cd /tmp && runuser -u alice -- condor_submit -a 'executable = /bin/true' "
        "-a 'accounting_group = group_astro' -a 'queue' /dev/null"
    )
    assert submit.rc != 0
    assert "Permission denied setting accounting_group to group_astro" in submit.stdout + submit.stderr


@pytest.fixture(scope="module")
def alice_double(browser, hub):
    started = browser("start", "alice", "180", json.dumps({"profile": "physics/double", "cpus": 1}))
    assert "ready_after" in started, started
    yield session_ad(hub, "alice")
    browser("stop", "alice")


def test_a_session_runs_with_its_group_s_accounting_group_and_profile(alice_double):
    ad = alice_double
    assert ad["AcctGroup"] == "group_physics"
    assert ad["AccountingGroup"] == "group_physics.alice"
    assert (ad["CondorlabGroup"], ad["CondorlabProfile"]) == ("physics", "double")
    assert ad["RequestCpus"] == 1, "alice asked for one CPU of the profile's two"
    assert ad["RequestMemory"] == 1024
    assert ad["CondorlabWalltime"] == 3600


def test_the_central_manager_knows_the_groups_and_quotas(cm):
    assert cm.check_output("condor_config_val GROUP_NAMES") == "group_physics, group_astro, group_trial"
    assert float(cm.check_output("condor_config_val GROUP_QUOTA_DYNAMIC_group_physics")) == 0.5
    assert cm.check_output("condor_config_val GROUP_ACCEPT_SURPLUS_group_astro") == "True"


def test_the_accounting_report_counts_a_finished_session(browser, hub):
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))

    def carol() -> dict:
        report = hub.check_output(f"condorlab-accounting --since {day} --format csv")
        rows = [r for r in csv.DictReader(io.StringIO(report)) if r["level"] == "user" and r["user"] == "carol"]
        return rows[0] if rows else {"group": "group_astro", "sessions": "0", "wall_hours": "0"}

    before = carol()
    started_at = time.time()
    started = browser("start", "carol", "180")
    assert "ready_after" in started, started
    time.sleep(5)
    assert "stopped_after" in browser("stop", "carol")
    elapsed = time.time() - started_at
    # The report reads HTCondor's history: wait until the job is there.
    assert wait_for(lambda: int(carol()["sessions"]) > int(before["sessions"]), timeout=60)
    after = carol()
    assert after["group"] == "group_astro"
    assert int(after["sessions"]) == int(before["sessions"]) + 1
    wall = (float(after["wall_hours"]) - float(before["wall_hours"])) * 3600
    assert 0 < wall <= elapsed + 5, (wall, elapsed)
    table = hub.check_output(f"condorlab-accounting --since {day}")
    assert "group_astro" in table and "  carol" in table
    # The session's start and stop (between them, the ids of the pool tokens her lab got).
    sessions = session_records(hub, "carol")
    assert [r["event"] for r in sessions[-2:]] == ["start", "stop"]
    assert all(r["group"] == "astro" for r in sessions)
    # What the shadow reported of her job reached the queue: its CPU time (a lab's start alone takes
    # some) and its one start, with none of its reports refused by the access point.
    cluster = sessions[-1]["job"]
    usage = hub.check_output(f"condor_history {cluster} -limit 1 -af RemoteUserCpu RemoteSysCpu NumJobStarts")
    user_cpu, sys_cpu, starts = (float(value) for value in usage.split())
    assert user_cpu + sys_cpu > 0 and starts == 1, usage
    refused = hub.run(f"grep -c 'protected attribute denied.* in job {cluster}\\.0' /var/log/condor/SchedLog")
    assert refused.stdout.strip() == "0", refused.stdout


def test_the_accounting_report_playbook_fetches_a_csv_a_plot_and_a_page(tmp_path):
    run = run_playbook("playbooks/accounting-report.yml", "-e", f"accounting_report_dir={tmp_path}", timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    (report,) = tmp_path.glob("condorlab-accounting-hub-*.csv")
    rows = list(csv.DictReader(report.open()))
    assert any(r["group"] == "group_astro" and r["user"] == "carol" for r in rows)
    groups = sorted({r["group"] for r in rows})
    (png,) = tmp_path.glob("condorlab-accounting-hub-*.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (1000, 650)
    (svg,) = tmp_path.glob("condorlab-accounting-hub-*.svg")
    series = sorted(re.findall(r'id="series-([^"]+)"', svg.read_text()))
    assert series == groups, "one line per group of the report"
    (page,) = tmp_path.glob("condorlab-accounting-hub-*.html")
    text = page.read_text()
    assert "<svg" in text and "<td>carol</td>" in text and all(f'id="series-{g}"' in text for g in groups)


def test_a_user_whose_name_has_a_dot_starts_and_reaches_a_session(hub, outsider):
    """erin.lee: accepted by the map, the spawner and the job helper alike (contract.USER_NAME)."""
    assert "* erin.lee group_physics" in hub.file("/etc/condor/condorlab-accounting.map").content_string
    client = hub_client(outsider, hub, set_passwords(hub, ["erin.lee"]))
    started = client("start", "erin.lee", "180")
    assert "ready_after" in started, started
    try:
        ad = session_ad(hub, "erin.lee")
        assert ad["AccountingGroup"] == "group_physics.erin.lee" and ad["CondorlabGroup"] == "physics"
        # Her lab's origin: JupyterHub encodes a name that is not a DNS label. The outsider
        # resolves it as a site's wildcard DNS entry would.
        host = urlsplit(started["server"]["url"]).hostname
        assert host.endswith(".labs.localhost") and host != "erin.lee.labs.localhost", host
        assert outsider.run(f"getent hosts {host}").rc == 0, "the client's start made it resolvable"
        status = client("get", "erin.lee", "/user/erin.lee/api/status")
        assert status["status"] == 200 and "last_activity" in status["text"], status
    finally:
        stopped = client("stop", "erin.lee")
    assert "stopped_after" in stopped, stopped
    assert not hub.file("/home/erin.lee/.condorlab/sessions/default/session.json").exists, "secrets cleaned"
