"""Batch jobs posing as sessions: bob marks his own jobs as sessions in every way a submitter can,
and they never enter the interactive share, never count as sessions, and are swept.

What makes a job a session is the hub's seal (condorlab-seal, as root): the
access point deletes it from every submission and refuses it to the owner's
condor_qedit; the share's START and the interactive negotiator trust only it.
"""

from __future__ import annotations

import json

from conftest import wait_for
from test_share import SHARE, interactive_cycles, jobs, submit

POSING = (
    "arguments = 600",
    "request_cpus = 1",
    "request_memory = 64",
    "+CondorlabSession = true",
    "+CondorlabSealed = true",
    "+CondorlabWalltime = 1800",
    '+CondorlabServer = "bob/default"',
    '+CondorlabGroup = "pwned"',
    '+CondorlabProfile = "small"',
    f"requirements = {SHARE}",
)


def hub_metrics(cm) -> str:
    """The hub's /hub/metrics as Prometheus reads them (its read:metrics token)."""
    return cm.check_output(
        "curl -sf --cacert /etc/prometheus/condorlab-hub-ca.crt "
        "--resolve hub.localhost:8443:$(getent hosts hub | cut -d' ' -f1) "
        '-H "Authorization: token $(cat /etc/prometheus/condorlab-hub.token)" '
        "https://hub.localhost:8443/hub/metrics"
    )


def test_bob_s_jobs_posing_as_sessions_never_enter_the_share_and_are_swept(hub, cm, browser):
    before = interactive_cycles(cm)
    cluster = submit(hub, "bob", *POSING, count=4)
    posing = f"ClusterId == {cluster}"
    try:
        # The seal a submitter writes is gone at submission, and bob cannot add it afterwards.
        seals = hub.check_output(f"condor_q {cluster} -af CondorlabSealed CondorlabSession").split("\n")
        assert seals == ["undefined true"] * 4, seals
        edit = hub.run(f"cd /tmp && runuser -u bob -- condor_qedit {cluster} CondorlabSealed true")
        assert edit.rc != 0, edit
        assert hub.check_output(f"condor_q {cluster}.0 -af CondorlabSealed") == "undefined"

        # alice's session starts, and the hub counted no session ahead of her.
        started = browser("progress", "alice", "60", json.dumps({"profile": "physics/small"}))
        try:
            assert started["start_status"] in (201, 202), started
            assert not any("ahead of you" in m and "no session ahead" not in m for m in started["messages"]), started
            assert wait_for(lambda: jobs(hub, 'Owner == "alice" && CondorlabSealed =?= true && JobStatus == 2'), 30)
            metrics = hub_metrics(cm)
            assert 'group="pwned"' not in metrics, [line for line in metrics.splitlines() if "pwned" in line]
        finally:
            browser("stop", "alice")

        # Two whole cycles of the interactive negotiator: none of bob's jobs ran.
        assert wait_for(lambda: interactive_cycles(cm) >= before + 2, 60), "the interactive negotiator cycles"
        assert all(job["JobStatus"] == 1 for job in jobs(hub, posing)), jobs(hub, posing)

        # The sweep removes them as jobs no server of the hub owns (jupyterhub_orphan_grace).
        assert wait_for(lambda: not jobs(hub, f"{posing} && JobStatus != 3"), 200, interval=5), jobs(hub, posing)
        history = hub.check_output(f"condor_history {cluster} -limit 4 -af JobStatus NumJobStarts").split("\n")
        assert history == ["3 0"] * 4, history
        removals = hub.check_output(
            "journalctl -u jupyterhub --since '-10min' -o cat | grep 'Removed session job' || true"
        )
        assert f"Removed session job {cluster} of bob" in removals, removals
    finally:
        hub.run(f"condor_rm {cluster}")
