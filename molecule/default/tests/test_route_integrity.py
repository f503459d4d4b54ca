"""A user's route leads only to that user's lab: attacks by bob, a pool user, on alice's sessions.

bob holds a session certificate of his own (copied from his session's staging
directory while it ran: the notebooks CA signed it), listens with it on every
free port of the former session range on alice's node, taking hers when her
lab dies (his batch jobs binding every port of both nodes are
test_attack_tunnel.py's), edits his own session job's
attributes, knocks on the proxy's API with it, and runs a script in his own
lab's origin in a browser where alice is logged in.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import time

import pytest
from conftest import HUB_URL, PUBLIC_CA, chromium_login, wait_for

INTERNAL = "/var/lib/jupyterhub/internal-ssl"
BOB_STAGING = "/home/bob/.condorlab/sessions/default"
STOLEN = "/home/bob/stolen"

# A batch job of bob's: listens with bob's certificate on every port of the
# session range it can bind, again and again (so it takes a port the moment a
# lab lets go of it), answers every request with a page of its own and logs
# what it was sent.
SQUATTER = r"""
import os, resource, socket, ssl, sys, threading, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("session-tls.crt", "session-tls.key")
log = open(sys.argv[1], "a", buffering=1)
held = {}

def serve(sock):
    while True:
        try:
            conn, peer = sock.accept()
        except OSError:
            return
        try:
            tls = context.wrap_socket(conn, server_side=True)
            data = tls.recv(65536).decode(errors="replace")
            log.write(f"REQUEST from {peer[0]}: {data!r}\n")
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\nSQUATTED BY bob")
            tls.close()
        except Exception as exc:
            log.write(f"HANDSHAKE from {peer[0]} failed: {exc}\n")

while True:
    for port in range(50000, 51000):
        if port in held:
            continue
        sock = socket.socket()
        try:
            sock.bind(("0.0.0.0", port))
            sock.listen(16)
        except OSError:
            sock.close()
            continue
        held[port] = sock
        threading.Thread(target=serve, args=(sock,), daemon=True).start()
    log.write(f"HOLDING {len(held)}\n")
    time.sleep(0.05)
"""


def condor_q(hub, constraint: str, attrs: str) -> list[dict]:
    out = hub.check_output(f"condor_q -all -json -constraint '{constraint}' -attributes {attrs}")
    return json.loads(out) if out.strip() else []


def alice_job(hub) -> dict | None:
    jobs = condor_q(hub, 'Owner == "alice" && CondorlabSession =?= true && JobStatus == 2', "ClusterId,RemoteHost")
    return jobs[0] if jobs else None


@pytest.fixture(scope="module")
def stolen_cert(browser, hub):
    """bob's own session certificate and key, copied while his session ran; his session ended."""
    started = browser("start", "bob", "180")
    assert "ready_after" in started, started
    hub.check_output(
        f"runuser -u bob -- sh -c 'mkdir -p {STOLEN} && cp {BOB_STAGING}/session-tls.key "
        f"{BOB_STAGING}/session-tls.crt {STOLEN}/'"
    )
    assert browser("stop", "bob").get("stopped_after") is not None
    assert not hub.file(f"{BOB_STAGING}/session-tls.key").exists, "the staged key is gone with the session"
    return STOLEN


def test_a_port_alice_s_lab_lets_go_of_never_routes_her_to_bob(browser, hub, execute_nodes, stolen_cert):
    """bob's squatter runs on alice's node (as his batch job's process would) and takes her port when her lab dies."""
    started = browser("start", "alice", "180")
    assert "ready_after" in started, started
    job = alice_job(hub)
    node = next(n for n in execute_nodes if n.backend.name == job["RemoteHost"].split("@")[-1])
    # bob's squatter on her node takes every other port, and hers the moment it is free.
    script = base64.b64encode(SQUATTER.encode()).decode()
    node.check_output(
        f"runuser -u bob -- sh -c 'mkdir -p /tmp/bob && cd /tmp/bob && echo {script} | base64 -d > squat.py "
        f"&& cp /dev/null squat.log'"
    )
    crt = hub.file(f"{STOLEN}/session-tls.crt").content_string
    key = hub.file(f"{STOLEN}/session-tls.key").content_string
    for name, text in (("session-tls.crt", crt), ("session-tls.key", key)):
        encoded = base64.b64encode(text.encode()).decode()
        node.check_output(f"runuser -u bob -- sh -c 'echo {encoded} | base64 -d > /tmp/bob/{name}'")
    # A process of bob's that outlives this command, as his batch job's would.
    node.check_output(
        "systemd-run --quiet --uid=bob --unit=bob-squat --working-directory=/tmp/bob /usr/bin/python3 squat.py squat.log"
    )
    try:
        assert wait_for(lambda: "HOLDING" in node.run("cat /tmp/bob/squat.log").stdout, 30)
        # alice's lab dies (out of memory, a crash): its port comes free and bob takes it.
        node.check_output("pkill -KILL -u alice -f jupyterhub-singleuser")
        seen = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            result = browser("get", "alice", "/user/alice/api/status")
            seen.append((result["status"], result["text"][:80]))
            assert "SQUATTED" not in result["text"], seen
            model = json.loads(browser("get", "alice", "/hub/api/users/alice")["text"])
            if not model.get("servers"):
                break
            time.sleep(2)
        assert not model.get("servers"), f"the hub still routes to alice's dead lab: {seen[-3:]}"
        log = node.run("cat /tmp/bob/squat.log").stdout
        assert "REQUEST" not in log or "jupyterhub-session-id" not in log, log[-2000:]
        assert "/user/alice" not in log, log[-2000:]
        # A new start works, though every free port of her node is bob's.
        again = browser("start", "alice", "180")
        assert "ready_after" in again, again
        assert "SQUATTED" not in browser("get", "alice", "/user/alice/api/status")["text"]
        browser("stop", "alice")
    finally:
        node.run("systemctl stop bob-squat")
        if json.loads(browser("get", "alice", "/hub/api/users/alice")["text"]).get("servers"):
            browser("stop", "alice")


# Attributes bob must not change on his own session job, with the value he tries (the CPU time and
# start count the shadow reports stay editable: htcondor_shadow_job_attrs).
PROTECTED = {
    "RemoteWallClockTime": "-360",
    "CumulativeSlotTime": "-360",
    "JobCurrentStartDate": "0",
    "JobStatus": "1",
    "RemoteHost": '"slot1@evil"',
    "CondorlabSession": "false",
    "CondorlabServer": '"alice/default"',
    "PeriodicHold": "false",
    "AcctGroup": '"group_astro"',
}


def test_bob_cannot_edit_his_session_s_protected_attributes_and_the_report_stays_true(browser, hub):
    started = browser("start", "bob", "180")
    assert "ready_after" in started, started
    (job,) = condor_q(hub, 'Owner == "bob" && CondorlabSession =?= true', "ClusterId")
    cluster = job["ClusterId"]
    t0 = time.time()
    for attr, value in PROTECTED.items():
        before = hub.check_output(f"condor_q {cluster} -af {attr}")
        result = hub.run(f"cd /tmp && runuser -u bob -- condor_qedit {cluster} {attr} '{value}'")
        after = hub.check_output(f"condor_q {cluster} -af {attr}")
        assert result.rc != 0, (attr, result.stdout, result.stderr)
        assert after == before, (attr, before, after)
    assert browser("stop", "bob").get("stopped_after") is not None
    elapsed_hours = (time.time() - t0 + 300) / 3600
    report = hub.check_output(
        "/opt/condorlab/hub/bin/condorlab-accounting --format csv --since $(( $(date +%s) - 3600 ))"
    )
    rows = {(r["level"], r["user"]): r for r in csv.DictReader(io.StringIO(report)) if r["group"] == "group_physics"}
    bob = rows[("user", "bob")]
    assert 0 <= float(bob["wall_hours"]) <= elapsed_hours * int(bob["sessions"]), bob
    assert float(bob["core_hours"]) >= 0


def test_bob_cannot_edit_what_the_shadow_reports_of_alice_s_session(browser, hub):
    """The CPU time and start count stay editable for a job's owner only (htcondor_shadow_job_attrs):
    bob's edits of alice's session are refused and change nothing."""
    started = browser("start", "alice", "180")
    assert "ready_after" in started, started
    try:
        cluster = alice_job(hub)["ClusterId"]
        for attr, value in (("RemoteUserCpu", 999999), ("NumJobStarts", 7), ("CommittedTime", 999999)):
            edit = hub.run(f"cd /tmp && runuser -u bob -- condor_qedit {cluster} {attr} {value}")
            assert edit.rc != 0, (attr, edit.stdout, edit.stderr)
            # The shadow may report meanwhile: what counts is that bob's value is not there.
            after = hub.check_output(f"condor_q {cluster} -af {attr}")
            assert after == "undefined" or float(after) != value, (attr, after)
    finally:
        browser("stop", "alice")


def test_a_session_whose_requests_bob_raised_is_ended(browser, hub):
    started = browser("start", "bob", "180")
    assert "ready_after" in started, started
    (job,) = condor_q(hub, 'Owner == "bob" && CondorlabSession =?= true', "ClusterId")
    hub.check_output(f"cd /tmp && runuser -u bob -- condor_qedit {job['ClusterId']} RequestCpus 2")
    ended = wait_for(lambda: not json.loads(browser("get", "bob", "/hub/api/users/bob")["text"]).get("servers"), 90)
    assert ended, "the hub ends a session whose job asks for more than the hub submitted"
    assert wait_for(lambda: not condor_q(hub, f"ClusterId == {job['ClusterId']}", "ClusterId"), 60)
    logs = hub.check_output("journalctl -u jupyterhub --no-pager -o cat")
    assert (
        f"Session job {job['ClusterId']} of bob ended (changed): its job was changed after submission (RequestCpus 2"
        in logs
    )


def test_the_proxy_api_refuses_a_session_certificate_at_tls(hub, stolen_cert):
    token = "$(sed -n 's/^CONFIGPROXY_AUTH_TOKEN=//p' /etc/jupyterhub/secrets.env)"
    base = (
        f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 --cacert {INTERNAL}/proxy-api-ca/proxy-api-ca.crt "
        f'-H "Authorization: token {token}" '
    )
    with_session = hub.run(
        base + f"--cert {STOLEN}/session-tls.crt --key {STOLEN}/session-tls.key https://127.0.0.1:8001/api/routes"
    )
    # Refused in the handshake, even with the proxy's token: no HTTP answer at all.
    assert with_session.stdout == "000" and with_session.rc in (35, 56), with_session
    with_hub = hub.run(
        base + f"--cert {INTERNAL}/hub-internal/hub-internal.crt --key {INTERNAL}/hub-internal/hub-internal.key "
        "https://127.0.0.1:8001/api/routes"
    )
    assert with_hub.stdout == "200", with_hub


def test_a_session_certificate_names_only_its_tunnel_and_its_user_for_the_session_s_time(browser, hub):
    started = browser("start", "carol", "180")
    assert "ready_after" in started, started
    try:
        text = hub.check_output(
            "openssl x509 -noout -ext subjectAltName -enddate -subject "
            "-in /home/carol/.condorlab/sessions/default/session-tls.crt"
        )
    finally:
        browser("stop", "carol")
    # The name the hub and the proxy reach her tunnel by, and her own domain: no node, no address, not the hub.
    assert "DNS:localhost" in text and "DNS:carol.labs.localhost" in text, text
    assert "DNS:wn1" not in text and "DNS:wn2" not in text and "IP Address" not in text, text
    assert "DNS:hub" not in text.replace("hub.localhost", ""), text
    assert "CN=user-carol" in text.replace(" ", ""), text
    end = text.split("notAfter=")[1].splitlines()[0]
    left = int(hub.check_output(f"date -d '{end}' +%s")) - int(hub.check_output("date +%s"))
    # astro/quick: 30 min walltime, plus the start timeout and the margin -- hours, not years
    assert 1800 < left < 4 * 3600, (end, left)


# ---- origin isolation, in a real browser -----------------------------------------

READ_TOKEN = """
const done = arguments[arguments.length - 1];
const attempts = {};
// The page's own _xsrf cookie, sent back as a header as JupyterHub's pages do.
const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || "";
async function attempt(name, url, init) {
  try {
    init = Object.assign({credentials: "include", headers: {}}, init || {});
    init.headers["X-XSRFToken"] = xsrf;
    const r = await fetch(url, init);
    attempts[name] = r.status + " " + (await r.text()).slice(0, 300);
  } catch (e) { attempts[name] = "blocked: " + e; }
}
(async () => {
  await attempt("hub token page", "https://hub.localhost:8443/hub/token");
  await attempt("hub user model", "https://hub.localhost:8443/hub/api/user");
  await attempt("new token", "https://hub.localhost:8443/hub/api/users/alice/tokens",
                {method: "POST", body: "{}"});
  await attempt("same-origin hub path", "/hub/api/user");
  attempts["cookies"] = document.cookie;
  done(JSON.stringify(attempts));
})();
"""


def test_a_page_in_bob_s_origin_cannot_read_alice_s_hub_token(chromium, passwords, hub, bob_lab):
    chromium_login(chromium, "alice", passwords["alice"])
    # Control: a script in the hub's own origin reads alice's model with her cookies.
    chromium.get(f"{HUB_URL}/hub/home")
    own = json.loads(chromium.execute_async_script(READ_TOKEN))
    assert own["hub user model"].startswith("200") and '"name":"alice"' in own["hub user model"].replace(" ", ""), own
    # The same script in a page of bob's lab (his origin; /api answers anybody), in alice's browser.
    chromium.get("https://bob.labs.localhost:8443/user/bob/api")
    assert '"version"' in chromium.page_source, chromium.page_source[:500]
    assert chromium.current_url.startswith("https://") and "bob.labs.localhost" in chromium.current_url
    attempts = json.loads(chromium.execute_async_script(READ_TOKEN))
    screenshot = os.environ.get("CONDORLAB_SCREENSHOTS")
    if screenshot:
        chromium.save_screenshot(os.path.join(screenshot, "bob-origin.png"))
    for name in ("hub token page", "hub user model", "new token"):
        assert attempts[name].startswith("blocked"), (name, attempts)
    assert '"name":"alice"' not in attempts["same-origin hub path"].replace(" ", ""), attempts
    assert "jupyterhub-session-id" not in attempts["cookies"], attempts


def test_the_public_ca_is_the_one_the_browser_trusts(hub):
    """The SPKI pin above is the test bed's own certificate, issued by its CA."""
    result = hub.run(f"openssl verify -CAfile {PUBLIC_CA} /etc/condorlab/public-tls/server.crt")
    assert result.rc == 0, result
    names = hub.check_output("openssl x509 -noout -ext subjectAltName -in /etc/condorlab/public-tls/server.crt")
    assert "DNS:*.labs.localhost" in names and "DNS:hub.localhost" in names, names
