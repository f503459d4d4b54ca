"""Faults on the test bed, done for real: a lost execute node, a dead lab, orphaned jobs, an idle
session. Each test asserts the outcome and prints what it measured (detection or recovery time)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from conftest import hub_client, set_passwords, wait_for

USERS = ("alice", "bob", "carol", "erin.lee", "judy")


@pytest.fixture(scope="module")
def logins(hub):
    return set_passwords(hub, USERS)


@pytest.fixture(scope="module")
def client(outsider, hub, logins):
    return hub_client(outsider, hub, logins)


@pytest.fixture
def report(capsys):
    """Print a measured figure where the test run shows it."""

    def say(text: str) -> None:
        with capsys.disabled():
            print(f"\n  [fault suite] {text}")

    return say


def podman(*args: str) -> str:
    return subprocess.run(["podman", *args], check=True, capture_output=True, text=True, timeout=120).stdout


def session_jobs(hub, user: str, constraint: str = "true") -> list[dict]:
    out = hub.check_output(
        f"condor_q -all -json -constraint 'Owner == \"{user}\" && CondorlabSession =?= true && ({constraint})' "
        "-attributes ClusterId,JobStatus,RemoteHost"
    )
    return json.loads(out) if out.strip() else []


def servers(client, user: str) -> dict:
    model = client("get", user, f"/hub/api/users/{user}")
    return json.loads(model["text"]).get("servers") or {}


def started(client, user: str, options: dict | None = None) -> dict:
    client("stop", user)  # nothing left from an earlier test
    result = client("start", user, "120", *([json.dumps(options)] if options else []))
    assert "ready_after" in result, result
    return result


def records(hub, user: str) -> list[dict]:
    lines = hub.file("/var/lib/jupyterhub/accounting/sessions.jsonl").content_string.splitlines()
    return [r for r in map(json.loads, lines) if r.get("user") == user]


def node_of(job: dict) -> str:
    return job["RemoteHost"].rsplit("@", 1)[-1].split(".")[0]


def slots_since(cm, node: str, since: float) -> int:
    """The slots a node's startd started after ``since`` (epoch) advertises: it is back in the pool."""
    out = cm.check_output(
        f"condor_status -constraint 'Machine == \"{node}\" && DaemonStartTime > {int(since)}' -af Name"
    )
    return len(out.split())


def crash(node: str) -> tuple[str, str]:
    """Kill a node's container (its kernel, as far as the others can tell); return its network and address."""
    network, address = podman(
        "inspect",
        node,
        "--format",
        "{{range $name, $net := .NetworkSettings.Networks}}{{$name}} {{$net.IPAddress}}{{end}}",
    ).split()
    podman("kill", node)
    return network, address


def boot(node: str, network: str, address: str) -> None:
    """Start the node again with its address, as a rebooted machine comes back (the firewall names addresses)."""
    podman("network", "disconnect", network, node)
    podman("network", "connect", "--ip", address, network, node)
    podman("start", node)


def test_a_lost_node_is_noticed_and_the_user_can_start_again(client, hub, cm, report):
    started(client, "alice")
    (job,) = session_jobs(hub, "alice", "JobStatus == 2")
    node = node_of(job)
    killed, killed_at = time.monotonic(), time.time()
    network, address = crash(node)
    try:
        assert wait_for(lambda: not servers(client, "alice"), 150, interval=2), "the hub ends the session"
        detected = time.monotonic() - killed
        form = client("get", "alice", "/hub/spawn")["text"]
        assert f"the node running your session, {node}, stopped answering at" in form, form[-2000:]
        again = started(client, "alice")
        ready = time.monotonic() - killed
        (new,) = session_jobs(hub, "alice", "JobStatus == 2")
        assert new["ClusterId"] != job["ClusterId"] and node_of(new) != node
        report(
            f"node loss ({node} killed): session ended after {detected:.1f} s, a new session ready after "
            f"{ready:.1f} s (its own start {again['ready_after']:.1f} s)"
        )
        (stop,) = [r for r in records(hub, "alice") if r["event"] == "stop" and r["job"] == str(job["ClusterId"])]
        assert stop["reason"] == "node-lost", stop
    finally:
        client("stop", "alice")
        boot(node, network, address)
        assert wait_for(lambda: slots_since(cm, node, killed_at) >= 2, 240, interval=3), f"{node} is back in the pool"


def test_a_dead_lab_ends_the_session_at_once(client, hub, execute_nodes, report):
    started(client, "bob")
    (job,) = session_jobs(hub, "bob", "JobStatus == 2")
    node = next(n for n in execute_nodes if n.backend.name == node_of(job))
    killed = time.monotonic()
    node.check_output("pkill -KILL -u bob -f jupyterhub-singleuser")
    assert wait_for(lambda: not servers(client, "bob"), 60, interval=1), "the hub ends the session"
    report(f"lab killed on {node_of(job)}: session ended after {time.monotonic() - killed:.1f} s")
    form = client("get", "bob", "/hub/spawn")["text"]
    assert f"your lab on {node_of(job)}" in form, form[-2000:]
    started(client, "bob")
    client("stop", "bob")


def test_orphaned_session_jobs_are_swept_and_the_hub_s_own_kept(client, hub, report):
    own = started(client, "bob")
    (kept,) = session_jobs(hub, "bob", "JobStatus == 2")
    restarts = hub.check_output("systemctl show jupyterhub -p NRestarts --value")
    grace = int(
        hub.check_output("grep -o -- '--grace\", \"[0-9]*' /etc/jupyterhub/jupyterhub_config.py").split('"')[-1]
    )
    # A job as an older deployment or a lost hub database leaves it: it names a server the hub does not have.
    # It asks for no memory, so its RequestMemory is an expression (the hub must read it safely).
    orphan = hub.check_output(
        "cd /tmp && runuser -u carol -- condor_submit -terse -a 'executable = /bin/sleep' -a 'arguments = 3600' "
        "-a 'transfer_executable = false' -a 'should_transfer_files = YES' -a 'requirements = false' "
        "-a '+CondorlabSession = true' -a '+CondorlabServer = \"carol/named-gone\"' -a '+CondorlabWalltime = 1800' "
        "-a 'queue' /dev/null"
    ).split(".")[0]
    submitted = time.monotonic()
    try:
        assert wait_for(lambda: not session_jobs(hub, "carol", f"ClusterId == {orphan}"), grace + 120, interval=3)
        swept = time.monotonic() - submitted
        log = hub.check_output("journalctl -u jupyterhub --no-pager -o cat --since '-10 min'")
        assert f"Removed session job {orphan} of carol (carol/named-gone)" in log
        assert hub.check_output("systemctl show jupyterhub -p NRestarts --value") == restarts, "the hub kept running"
        (still,) = session_jobs(hub, "bob", "JobStatus == 2")
        assert still["ClusterId"] == kept["ClusterId"] and servers(client, "bob")[""]["ready"]
        report(f"orphan removed {swept:.1f} s after submission (grace {grace} s); the hub's own session kept")
    finally:
        hub.run(f"condor_rm {orphan}")
        client("stop", "bob")
    assert own


def test_an_idle_session_is_ended_like_a_stop(client, hub, report):
    result = started(client, "judy")
    began = time.monotonic()
    assert wait_for(lambda: not servers(client, "judy"), 240, interval=3), "the trial group's culler ends it"
    report(f"idle session ended {time.monotonic() - began:.1f} s after it was ready (idle timeout 60 s)")
    stop = records(hub, "judy")[-1]
    assert (stop["event"], stop["reason"]) == ("stop", "idle"), stop
    assert not session_jobs(hub, "judy", "JobStatus != 3"), "the job ended (its files came back)"
    form = client("get", "judy", "/hub/spawn")["text"]
    assert "nobody used it for 1 minute, the idle limit of user group trial" in form, form[-2000:]
    assert result


@pytest.fixture(scope="module")
def four_sessions(client, hub):
    users = ("alice", "bob", "carol", "erin.lee")
    for user in users:
        started(client, user)
    yield users
    for user in users:
        client("stop", user)


def test_the_home_page_says_how_long_a_session_may_run(client, four_sessions):
    text = client("get", "alice", "/hub/home")["text"]
    assert "Your session on wn" in text and "may run until" in text and "physics/small" in text, text[-3000:]
