"""bob against alice's tunnel: his batch jobs flood her node's ports, and he goes for her channel, as a pool user can.

alice's lab listens on a Unix socket in her job's private directory; the hub
reaches it through condor_ssh_to_job (her own, in a unit of its own) and a
loopback port of the access point that the tunnel front holds. bob controls his
jobs, his ports and connections on a shared node, and his shell on the access
point. None of it denies or reaches her session. And condor_ssh_to_job into an
ordinary batch job is the site's choice: the test bed allows it on wn1 (the
pool's own setting) and forbids it on wn2 (condorlab_ssh_to_batch_jobs: false).
"""

from __future__ import annotations

import re

import pytest
from conftest import wait_for
from test_share import jobs, submit

# bob's batch job: binds every port it can (from 1024 up, as far as its file
# limit goes: the session port range of old and far beyond), and holds 300
# connections to each port listening on the node's loopback, for its lifetime.
FLOOD = r"""
import resource, socket, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held, listening = [], set()
with open("/proc/net/tcp") as table:
    for line in list(table)[1:]:
        f = line.split()
        if f[3] == "0A":
            listening.add(int(f[1].split(":")[1], 16))
for port in sorted(listening):
    for _ in range(300):
        try:
            held.append(socket.create_connection(("127.0.0.1", port), timeout=1))
        except OSError:
            break
bound = 0
for port in range(1024, 65536):
    if len(held) >= hard - 200:
        break
    s = socket.socket()
    try:
        s.bind(("0.0.0.0", port)); s.listen(1); held.append(s); bound += 1
    except OSError:
        s.close()
print(f"bound {bound} ports, {len(held) - bound} connections to {sorted(listening)}", flush=True)
time.sleep(900)
"""


def bob_runs(host, command: str):
    """command as bob on a pool host, as his batch job or his shell on the access point would."""
    return host.run(f"cd /tmp && runuser -u bob -- {command}")


@pytest.fixture(scope="module")
def floods(hub):
    """One flooding batch job of bob's on each execute node, running: {node: cluster}."""
    hub.run("install -d -m 0755 /tmp/condorlab-flood")
    hub.run(f"cat > /tmp/condorlab-flood/flood.py <<'EOF'\n{FLOOD}\nEOF")
    clusters = {}
    for node in ("wn1", "wn2"):
        clusters[node] = submit(
            hub,
            "bob",
            "executable = /usr/bin/python3",
            "arguments = flood.py",
            "transfer_input_files = /tmp/condorlab-flood/flood.py",
            "request_cpus = 1",
            "request_memory = 256",
            f'requirements = Machine == "{node}"',
            "output = /tmp/condorlab-flood/out.$(Cluster)",
        )
    running = " || ".join(f"ClusterId == {c}" for c in clusters.values())
    try:
        # The batch negotiator's cycle (60 s) starts them, as at a full site.
        assert wait_for(lambda: len(jobs(hub, f"({running}) && JobStatus == 2")) == 2, 150, interval=3)
        yield clusters
    finally:
        hub.run(f"condor_rm {' '.join(clusters.values())}")


@pytest.fixture(scope="module")
def alice_on_flooded_node(floods, browser, hub):
    started = browser("start", "alice", "180")
    try:
        assert "ready_after" in started, started
        job = jobs(hub, 'Owner == "alice" && CondorlabSealed =?= true && JobStatus == 2')[0]
        units = hub.check_output("cat /run/condorlab/tunnel-units/alice:default.env")
        settings = dict(line.split("=", 1) for line in units.splitlines())
        yield {
            "started": started,
            "cluster": job["ClusterId"],
            "node": job["RemoteHost"].split("@")[-1],
            "port": int(settings["TUNNEL_END"].split("/")[-2]),
            "end": settings["TUNNEL_END"],
            "socket": settings["TUNNEL_SOCKET"],
        }
    finally:
        browser("stop", "alice")


def test_bob_s_port_and_connection_flood_neither_stops_alice_s_start_nor_her_lab(alice_on_flooded_node, browser):
    status = browser("get", "alice", "/user/alice/api/status")
    assert status["status"] == 200, status
    kernel = browser("get", "alice", "/user/alice/api/kernelspecs")
    assert kernel["status"] == 200, kernel


def test_bob_cannot_open_alice_s_hub_side_end_or_take_her_port(alice_on_flooded_node, hub):
    end, port = alice_on_flooded_node["end"], alice_on_flooded_node["port"]
    opened = bob_runs(hub, f"python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.connect(\"{end}\")'")
    assert opened.rc != 0 and "PermissionError" in opened.stderr, opened
    listed = bob_runs(hub, "cat /run/condorlab/tunnel-units/alice:default.env")
    assert listed.rc != 0, "the tunnels' settings are root's"
    for address in ("127.0.0.1", "0.0.0.0"):
        bound = bob_runs(hub, f"python3 -c 'import socket; socket.socket().bind((\"{address}\", {port}))'")
        assert bound.rc != 0 and "Address already in use" in bound.stderr, bound
    # Connecting is not reaching: the lab asks for a client certificate of the hub's internal CA.
    reached = bob_runs(hub, f"curl -sk --max-time 10 https://127.0.0.1:{port}/user/alice/api/status")
    assert reached.rc != 0 and reached.stdout == "", reached


def test_bob_cannot_ssh_into_alice_s_session(alice_on_flooded_node, hub):
    cluster = alice_on_flooded_node["cluster"]
    ssh = bob_runs(hub, f"timeout 60 condor_ssh_to_job {cluster} true")
    assert ssh.rc != 0, ssh
    assert re.search(r"not authorized|denied|permission|owner", ssh.stdout + ssh.stderr, re.I), ssh


def test_bob_s_job_on_alice_s_node_cannot_reach_her_lab_socket(alice_on_flooded_node, execute_nodes):
    node = next(n for n in execute_nodes if n.backend.name == alice_on_flooded_node["node"])
    path = alice_on_flooded_node["socket"]
    reached = bob_runs(node, f"python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.connect(\"{path}\")'")
    assert reached.rc != 0 and "PermissionError" in reached.stderr, reached
    listed = bob_runs(node, f"ls {path.rsplit('/', 2)[0]}")
    assert listed.rc != 0, "the job's directory is closed to other users"


def test_no_execute_node_listens_for_sessions(alice_on_flooded_node, execute_nodes):
    node = next(n for n in execute_nodes if n.backend.name == alice_on_flooded_node["node"])
    lab = node.check_output("pgrep -u alice -f jupyterhub-singleuser | head -1")
    assert lab, "alice's lab runs there"
    listening = node.check_output("ss -Hltnp")
    assert f"pid={lab}," not in listening, "her lab listens on no TCP port"
    assert not re.search(r":22\s", listening), "the node's own sshd stays masked"
    rules = node.check_output("nft list ruleset")
    assert "JupyterLab sessions" not in rules, "no port is opened for labs"


def test_ssh_into_an_ordinary_batch_job_is_the_site_s_choice(floods, hub):
    allowed = bob_runs(hub, f"timeout 60 condor_ssh_to_job {floods['wn1']} echo inside")
    assert allowed.rc == 0 and "inside" in allowed.stdout, allowed
    refused = bob_runs(hub, f"timeout 60 condor_ssh_to_job {floods['wn2']} echo inside")
    assert refused.rc != 0 and "inside" not in refused.stdout, refused


def test_the_flood_jobs_really_hold_the_ports(floods, execute_nodes):
    for node in execute_nodes:
        held = int(node.check_output("ss -Htln | wc -l"))
        assert held > 5000, f"{node.backend.name}: bob's job holds thousands of ports ({held})"


def test_bob_on_a_node_without_an_inbound_path_cannot_command_its_startd(execute_nodes):
    """wn2's startd listens on a port of its own (its own CCB registration, no inbound path): bob, whose
    jobs share the node, reaches it there and is refused all the same."""
    wn2 = execute_nodes[1]
    address = wn2.check_output("head -1 /var/log/condor/.startd_address")
    assert "sock=" not in address, f"the startd has its own port: {address}"
    before = wn2.check_output("pgrep -x condor_startd")
    vacate = bob_runs(wn2, f"condor_vacate -addr '{address}'")
    assert vacate.rc != 0 and "DENIED" in vacate.stderr, (vacate.stdout, vacate.stderr)
    off = bob_runs(wn2, f"condor_off -startd -fast -addr '{address}'")
    assert off.rc != 0, (off.stdout, off.stderr)
    assert wn2.check_output("pgrep -x condor_startd") == before, "the startd runs on, not restarted"
