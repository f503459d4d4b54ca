"""Attacks on a running session: each must fail, while the legitimate path still works.

alice runs a session; bob (another pool user), the other execute node and
the outsider (a host on the same network outside the pool) try to read her
secrets, reach her lab, abuse the port report and talk to the hub and the pool
directly.
"""

from __future__ import annotations

import base64
import json

import pytest
from conftest import PUBLIC_CA, wait_for

STAGING = "/home/alice/.condorlab/sessions/default"
INTERNAL = "/var/lib/jupyterhub/internal-ssl"
PROXY_TLS = "/etc/condorlab/proxy-tls"


def tcp_connect(host, target: str, port: int) -> str:
    """From ``host``, open a TCP connection: 'open', 'refused' or 'timeout'."""
    probe = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(({target!r}, {port}), timeout=3).close(); print('open')\n"
        "except ConnectionRefusedError: print('refused')\n"
        "except OSError: print('timeout')\n"
    )
    return host.check_output(f'python3 -c "{probe}"')


@pytest.fixture(scope="module")
def session(browser, hub, execute_nodes):
    """alice's running session: its job, node, port and secrets."""
    started = browser("start", "alice", "180")
    assert "ready_after" in started, started
    job = json.loads(
        hub.check_output(
            "condor_q -all -json -constraint 'Owner == \"alice\" && CondorlabSession =?= true' "
            "-attributes ClusterId,RemoteHost"
        )
    )[0]
    node_name = job["RemoteHost"].split("@")[-1]
    node = next(n for n in execute_nodes if n.backend.name == node_name)
    other = next(n for n in execute_nodes if n.backend.name != node_name)
    token = json.loads(hub.file(f"{STAGING}/session.json").content_string)["env"]["JUPYTERHUB_API_TOKEN"]
    key = hub.file(f"{STAGING}/session-tls.key").content_string
    # The body of the key: a line of base64 from its middle.
    key_line = key.strip().splitlines()[len(key.strip().splitlines()) // 2]
    sandbox = node.check_output(
        "grep -l 'session-tls' /var/lib/condor/execute/dir_*/.job.ad 2>/dev/null | head -1 | xargs dirname"
    )
    info = {
        "cluster": job["ClusterId"],
        "node": node,
        "node_name": node_name,
        "other": other,
        "token": token,
        "key_line": key_line,
        "sandbox": sandbox,
        "port": lab_port(hub, node_name),
    }
    yield info
    browser("stop", "alice")


def lab_port(hub, node_name: str) -> int:
    """The port the proxy routes alice's lab to (from the proxy's own table)."""
    routes = json.loads(
        hub.check_output(
            f"curl -sf --cacert {INTERNAL}/proxy-api-ca/proxy-api-ca.crt --cert {INTERNAL}/hub-internal/hub-internal.crt "
            f"--key {INTERNAL}/hub-internal/hub-internal.key "
            "-H \"Authorization: token $(sed -n 's/^CONFIGPROXY_AUTH_TOKEN=//p' /etc/jupyterhub/secrets.env)\" "
            "https://127.0.0.1:8001/api/routes"
        )
    )
    # With subdomain_host the route is /alice.labs.localhost/user/alice; the target is her tunnel's port.
    (target,) = [route["target"] for spec, route in routes.items() if spec.endswith("/user/alice")]
    assert target.startswith("https://localhost:"), target
    return int(target.rsplit(":", 1)[1].split("/")[0])


# ---- secrets ----------------------------------------------------------------


def test_bob_finds_no_token_or_key_in_the_queue(session, hub):
    ads = hub.check_output("runuser -u bob -- condor_q -all -long")
    assert f"ClusterId = {session['cluster']}" in ads, "bob sees alice's job"
    assert session["token"] not in ads
    assert session["key_line"] not in ads and "PRIVATE KEY" not in ads


def test_the_secrets_travel_only_as_encrypted_0600_files(session, hub):
    for name in ("session.json", "session-tls.key", "session-tls.crt", "session-ca.crt"):
        staged = hub.file(f"{STAGING}/{name}")
        assert (staged.user, staged.mode) == ("alice", 0o600), name
    assert hub.file(STAGING).mode == 0o700
    assert hub.run(f"runuser -u bob -- cat {STAGING}/session-tls.key").rc != 0
    encrypted = hub.check_output(f"condor_q {session['cluster']} -af EncryptInputFiles")
    assert "session.json" in encrypted and "session-tls.key" in encrypted
    assert hub.check_output("condor_config_val SEC_DEFAULT_ENCRYPTION").upper() == "REQUIRED"


def test_bob_cannot_read_the_secrets_in_the_job_sandbox(session):
    node, sandbox = session["node"], session["sandbox"]
    assert sandbox.startswith("/var/lib/condor/execute/dir_"), sandbox
    assert node.file(f"{sandbox}/session-tls.key").user == "alice"
    result = node.run(f"runuser -u bob -- cat {sandbox}/session-tls.key {sandbox}/session.json")
    assert result.rc != 0 and "Permission denied" in result.stderr


def test_the_hub_and_proxy_logs_hold_no_token_or_key(session, hub):
    logs = hub.check_output("journalctl -u jupyterhub -u condorlab-proxy --no-pager -o cat")
    assert "Session job" in logs, "the hub's log is there"
    assert session["token"] not in logs
    assert session["key_line"] not in logs
    condor_logs = hub.run(f"grep -rlF '{session['token']}' /var/log/condor")
    assert condor_logs.rc == 1, condor_logs.stdout


# ---- the lab's tunnel -------------------------------------------------------------


def test_the_tunnel_s_port_is_the_access_point_s_loopback_only(session, outsider):
    port = session["port"]
    assert tcp_connect(outsider, "hub", port) in ("timeout", "refused")
    assert tcp_connect(session["node"], "hub", port) in ("timeout", "refused")
    assert tcp_connect(session["other"], "hub", port) in ("timeout", "refused")


def test_the_proxy_host_reaches_the_lab_over_mutual_tls(session, hub):
    url = f"https://localhost:{session['port']}/user/alice/api/status"
    code = hub.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' --cacert {INTERNAL}/notebooks-ca/notebooks-ca.crt "
        f"--cert {PROXY_TLS}/proxy-client.crt --key {PROXY_TLS}/proxy-client.key {url}"
    )
    # The lab answers (403 without a user's token): the TLS handshake with the proxy's certificate worked.
    assert code in ("200", "302", "403"), code


def test_the_lab_refuses_plain_http_and_tls_without_a_client_certificate(session, hub):
    base = f"localhost:{session['port']}/user/alice/api/status"
    plain = hub.run(f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 http://{base}")
    assert plain.stdout == "000" and plain.rc != 0, plain
    anonymous = hub.run(
        f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 "
        f"--cacert {INTERNAL}/notebooks-ca/notebooks-ca.crt https://{base}"
    )
    assert anonymous.stdout == "000" and anonymous.rc != 0, anonymous


# ---- the hub ------------------------------------------------------------------


def test_the_hub_api_port_is_closed_to_the_outsider(session, outsider, hub):
    assert tcp_connect(outsider, "hub", 8081) == "timeout"
    assert tcp_connect(session["node"], "hub", 8081) == "open"
    assert tcp_connect(outsider, "hub", 9618) == "timeout"


def test_a_port_report_that_sets_another_attribute_is_refused(session, outsider, hub, browser):
    before = browser("get", "alice", "/hub/api/users/alice")
    token = session["token"]

    def post(path: str, body: dict) -> str:
        return outsider.check_output(
            f"curl -s -o /dev/null -w '%{{http_code}}' --cacert /tmp/condorlab-public-ca.crt "
            f"-H 'Authorization: token {token}' -H 'Content-Type: application/json' "
            # curl resolves *.localhost to the loopback itself: point it at the hub.
            f"-d '{json.dumps(body)}' --connect-to hub.localhost:8443:hub:8443 https://hub.localhost:8443{path}"
        )

    injected = {"port": session["port"], "batch_query_cmd": "touch /tmp/condorlab-pwned"}
    assert post("/hub/api/condorlab/port", injected) == "400"
    assert post("/hub/api/condorlab/port", {"port": session["port"] + 1}) == "400"
    assert post("/hub/api/batchspawner", injected) == "404"
    after = browser("get", "alice", "/hub/api/users/alice")
    assert json.loads(after["text"])["servers"][""]["url"] == json.loads(before["text"])["servers"][""]["url"]
    assert hub.run("find / -xdev -name condorlab-pwned -print -quit").stdout == ""
    assert browser("get", "alice", "/user/alice/api/status")["status"] == 200


def test_http_redirects_to_https_and_old_tls_is_refused(outsider):
    redirect = outsider.check_output("curl -s -o /dev/null -w '%{http_code} %{redirect_url}' http://hub/hub/login")
    assert redirect.startswith("301 https://hub") or redirect.startswith("302 https://hub"), redirect
    probe = (
        "import socket, ssl, sys\n"
        "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n"
        "ctx.load_verify_locations('/tmp/condorlab-public-ca.crt')\n"
        "ctx.set_ciphers('DEFAULT:@SECLEVEL=0')\n"
        "ctx.minimum_version = ssl.TLSVersion.TLSv1\n"
        "ctx.maximum_version = getattr(ssl.TLSVersion, sys.argv[1])\n"
        "try:\n"
        "    s = ctx.wrap_socket(socket.create_connection(('hub', 8443), timeout=5), server_hostname='hub')\n"
        "    print(s.version())\n"
        "except ssl.SSLError as exc: print('refused', exc.reason)\n"
    )
    script = base64.b64encode(probe.encode()).decode()
    outsider.check_output(f"echo {script} | base64 -d > /tmp/tlsprobe.py")
    assert outsider.check_output("python3 /tmp/tlsprobe.py TLSv1_2") == "TLSv1.2"
    old = outsider.check_output("python3 /tmp/tlsprobe.py TLSv1_1")
    # Refused by the server (its protocol_version alert), not by this client's own OpenSSL.
    assert old.startswith("refused") and ("PROTOCOL_VERSION" in old or "UNSUPPORTED_PROTOCOL" in old), old
    assert outsider.check_output("python3 /tmp/tlsprobe.py TLSv1_3") == "TLSv1.3"


# ---- HTCondor -------------------------------------------------------------------


FAKE_STARTD = """MyType = "Machine"
Name = "slot1@intruder"
Machine = "intruder"
StartdIpAddr = "<10.0.0.1:9618>"
Requirements = true
"""


@pytest.mark.parametrize(
    ("who", "env"),
    [("bob", ""), ("root", "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS=ANONYMOUS")],
    ids=["a-user", "root-anonymously"],
)
def test_nobody_without_a_pool_token_can_advertise_a_machine(execute_nodes, cm, who, env):
    node = execute_nodes[1]
    node.check_output(f"printf '%s' '{FAKE_STARTD}' > /tmp/fake.ad && chmod 644 /tmp/fake.ad")
    result = node.run(f"runuser -u {who} -- env {env} condor_advertise UPDATE_STARTD_AD /tmp/fake.ad")
    assert result.rc != 0 or "Failed" in result.stdout + result.stderr, result
    assert "intruder" not in cm.check_output("condor_status -af Machine")


def test_a_user_authenticated_on_the_central_manager_still_cannot_advertise(cm):
    """bob authenticates (FS) on the central manager itself; ADVERTISE_STARTD is for the pool's daemons only."""
    cm.check_output(f"printf '%s' '{FAKE_STARTD}' > /tmp/fake.ad && chmod 644 /tmp/fake.ad")
    ping = cm.check_output("runuser -u bob -- condor_ping -verbose -type collector READ")
    assert "bob@condorlab.test" in ping, "bob is authenticated"
    marker = int(cm.check_output("grep -c 'PERMISSION DENIED to bob@' /var/log/condor/CollectorLog || true") or 0)
    result = cm.run("runuser -u bob -- condor_advertise UPDATE_STARTD_AD /tmp/fake.ad")
    assert result.rc != 0, result
    denials = cm.check_output("grep 'PERMISSION DENIED to bob@' /var/log/condor/CollectorLog || true").splitlines()
    assert len(denials) > marker and "access level ADVERTISE_STARTD" in denials[-1], denials[-1:]
    assert "intruder" not in cm.check_output("condor_status -af Machine")


def test_anonymous_clients_cannot_write_to_the_schedd(hub):
    submit = "condor_submit -a 'executable=/bin/true' -a 'queue' /dev/null"
    result = hub.run(f"cd /tmp && runuser -u bob -- env _CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS=ANONYMOUS {submit}")
    assert result.rc != 0
    assert "authenticat" in (result.stdout + result.stderr).lower(), result
    control = hub.run(f"cd /tmp && runuser -u bob -- {submit}")
    assert control.rc == 0, control
    hub.check_output("condor_rm bob")


def test_the_session_still_ends_normally(session, browser, hub):
    cluster = session["cluster"]
    assert browser("stop", "alice").get("stopped_after") is not None
    assert wait_for(lambda: hub.run(f"condor_history {cluster} -limit 1 -af ExitCode").stdout.strip() == "0", 60)
    history = hub.check_output(f"runuser -u bob -- condor_history {cluster} -long")
    assert f"ClusterId = {cluster}" in history
    assert session["token"] not in history and session["key_line"] not in history
    # The staged secrets go with the session; its logs stay for the user.
    for name in ("session.json", "session-tls.key", "session-tls.crt", "session-ca.crt"):
        assert not hub.file(f"{STAGING}/{name}").exists, name
    assert hub.file(f"{STAGING}/session.err").exists


def test_the_internal_ca_keys_are_the_hubs_alone(hub):
    assert hub.file("/var/lib/jupyterhub").mode == 0o700
    for key in (f"{INTERNAL}/notebooks-ca/notebooks-ca.key", f"{PROXY_TLS}/proxy-client.key", f"{PUBLIC_CA[:-3]}key"):
        result = hub.run(f"runuser -u bob -- cat {key}")
        assert result.rc != 0 and "Permission denied" in result.stderr, key
