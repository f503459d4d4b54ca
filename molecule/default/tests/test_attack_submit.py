"""Attacks through what bob submits: his start request, the usage on his batch job, his session's lease.

bob (a pool user) sends the hub a start request with a 1 MB profile, submits a
batch job that claims usage it never had, and tries to lengthen the lease of
his own session's job. Each must fail and leave nothing behind: the hub answers
in a few lines and keeps no large value in its journal or its database; the
access point counts only what HTCondor measured; the lease stays as the hub
submitted it.
"""

from __future__ import annotations

import base64
import json

from conftest import session_ad, wait_for

HUB_DATABASE = "/var/lib/jupyterhub/jupyterhub.sqlite"
START_PATH = "/hub/api/users/bob/server"

# On the outsider, with bob's API token: two start requests, one with a 1 MB
# profile (over the hub's body limit) and one with a 2000-character profile
# (within it, too long for a profile); prints what came back of each.
START_REQUESTS = r"""
import json, ssl, sys, urllib.error, urllib.request

token, url = sys.argv[1], sys.argv[2]
context = ssl.create_default_context(cafile="/tmp/condorlab-public-ca.crt")
answers = []
for size in (2**20, 2000):
    body = json.dumps({"profile": "x" * size}).encode()
    request = urllib.request.Request(
        url, data=body, method="POST",
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60, context=context) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    answers.append({"sent": len(body), "status": status, "length": len(text), "text": text[:3000].decode(errors="replace")})
print(json.dumps(answers))
"""

# On the hub, as root: the hub's journal since the requests (once it holds
# both), and the largest start options it keeps for bob.
HUB_TRACES = r"""
import json, sqlite3, subprocess, sys, time

since, path, database = sys.argv[1], sys.argv[2], sys.argv[3]
for _ in range(20):
    journal = subprocess.run(
        ["journalctl", "-u", "jupyterhub", "--since", since, "--no-pager", "-o", "cat"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    if sum(f"POST {path}" in line for line in journal) >= 2:
        break
    time.sleep(0.5)
db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
(stored,) = db.execute(
    "SELECT coalesce(max(length(s.user_options)), 0) FROM spawners s JOIN users u ON s.user_id = u.id "
    "WHERE u.name = 'bob'"
).fetchone()
print(json.dumps({
    "requests": sum(f"POST {path}" in line for line in journal),
    "lines": len(journal),
    "longest": max(map(len, journal), default=0),
    "quoting": [line[:300] for line in journal if "x" * 41 in line][:3],
    "stored": stored,
}))
"""


def python_on(host, script: str, *args: str) -> dict:
    """Run a Python script on a host in one exec; it prints one JSON document."""
    source = base64.b64encode(script.encode()).decode()
    quoted = " ".join("'" + a.replace("'", "'\\''") + "'" for a in args)
    return json.loads(host.check_output(f"echo {source} | base64 -d | python3 - {quoted}"))


def test_a_huge_start_option_is_refused_briefly_and_kept_nowhere(browser, outsider, hub):
    token = browser("token", "bob", "attack suite")["token"]
    since = "@" + hub.check_output("date +%s")
    large, too_long = python_on(outsider, START_REQUESTS, token, f"https://hub.localhost:8443{START_PATH}")
    # Over the body limit: refused before anything reads it.
    assert large["sent"] > 2**20 and large["status"] == 413, large
    # Within it, but no profile is that long: refused with a short prefix of the value.
    assert too_long["status"] == 400, too_long
    assert "longer than the 65 characters" in too_long["text"], too_long
    for answer in (large, too_long):
        assert answer["length"] < 1000, answer
        assert "x" * 41 not in answer["text"], answer
    traces = python_on(hub, HUB_TRACES, since, START_PATH, HUB_DATABASE)
    assert traces["requests"] >= 2, traces
    assert traces["longest"] < 4096, traces
    assert traces["quoting"] == [], traces
    assert traces["stored"] < 1000, traces


# What bob claims for a job that never ran, and what HTCondor's submit gives a new job (None: nothing).
FORGED = {
    "RemoteWallClockTime": ("999999", 0.0),
    "NumJobStarts": ("7", 0),
    "RemoteUserCpu": ("999999", 0.0),
    "CumulativeSlotTime": ("999999", 0),
    "JobRunCount": ("7", None),
    "LastRemoteWallClockTime": ("999999", None),
}


def test_usage_bob_claims_at_submission_counts_for_nothing(hub):
    claims = " ".join(f"-a '+{attr} = {claimed}'" for attr, (claimed, _) in FORGED.items())
    # Held from the start: it never runs, so every usage value it has is one it was given.
    submitted = hub.check_output(
        f"cd /tmp && runuser -u bob -- condor_submit -terse -a 'executable = /bin/true' -a 'hold = true' "
        f"{claims} -a 'queue' /dev/null"
    )
    cluster = int(submitted.split(".")[0])
    try:
        status, *values = hub.check_output(f"condor_q {cluster} -af JobStatus {' '.join(FORGED)}").split()
        assert status == "5", "still held: the submission's JobStatus is left alone"
        for (attr, (_, expected)), value in zip(FORGED.items(), values, strict=True):
            if expected is None:
                assert value == "undefined", (attr, value)
            else:
                assert float(value) == expected, (attr, value)
    finally:
        hub.run(f"cd /tmp && runuser -u bob -- condor_rm {cluster}")
    assert wait_for(lambda: hub.run(f"condor_history {cluster} -limit 1 -af ClusterId").stdout.strip(), 30)
    history = hub.check_output(f"condor_history {cluster} -limit 1 -long")
    recorded = dict(line.split(" = ", 1) for line in history.splitlines() if " = " in line)
    for attr, (claimed, _) in FORGED.items():
        assert recorded.get(attr, "undefined") != claimed, (attr, recorded.get(attr))
    assert recorded["NumJobStarts"] == "0"


def test_bob_cannot_lengthen_his_session_s_lease_or_release_its_walltime_hold(browser, hub):
    started = browser("start", "bob", "180")
    assert "ready_after" in started, started
    try:
        cluster = session_ad(hub, "bob")["ClusterId"]
        policy = f"condor_q {cluster} -af JobLeaseDuration PeriodicRelease"
        before = hub.check_output(policy)
        for attr, value in (("JobLeaseDuration", "999999"), ("PeriodicRelease", "true")):
            edit = hub.run(f"cd /tmp && runuser -u bob -- condor_qedit {cluster} {attr} {value}")
            assert edit.rc != 0, (attr, edit.stdout, edit.stderr)
        assert hub.check_output(policy) == before
        assert "999999" not in before
    finally:
        stopped = browser("stop", "bob")
    assert stopped.get("stopped_after") is not None, stopped
