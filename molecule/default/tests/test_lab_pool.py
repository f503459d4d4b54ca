"""The pool from the lab, as its user: HTCondor's tools in alice's lab, with a token of her own.

Everything runs in a kernel of the user's own lab, through the proxy (hubclient.py run), as a notebook
would; what the pool then holds is read on the access point.
"""

from __future__ import annotations

import json
import shlex
import time

import pytest
from conftest import wait_for

SWEEP = """
import os, subprocess, textwrap
with open("sweep.sh", "w") as script:
    script.write('#!/bin/sh\\necho "$1 squared is $(( $1 * $1 ))"\\nid -un\\n')
os.chmod("sweep.sh", 0o755)
description = textwrap.dedent('''
    executable = sweep.sh
    arguments = $(Item)
    output = sweep-$(Item).out
    error = sweep-$(Item).err
    log = sweep.log
    request_cpus = 1
    request_memory = 64MB
    should_transfer_files = YES
    queue Item in (1 2 3 4 5)
''')
open("sweep.sub", "w").write(description)
print(subprocess.run(["condor_submit", "-terse", "sweep.sub"], capture_output=True, text=True, timeout=60))
"""


def run(browser, user: str, code: str, timeout: float = 120) -> dict:
    result = browser("run", user, code, str(timeout))
    assert result.get("status") == "ok", result
    return result


@pytest.fixture(scope="module")
def alice_lab(browser):
    browser("stop", "alice")  # nothing left from an earlier test
    result = browser("start", "alice", "180")
    assert "ready_after" in result, result
    yield result
    browser("stop", "alice")


def test_in_her_lab_alice_submits_jobs_that_run_as_her_in_her_group(alice_lab, browser, hub):
    # The lab's first token arrives while it starts: the tools work at once, or within seconds.
    queue = "import subprocess; print(subprocess.run(['condor_q', '-totals'], capture_output=True, text=True))"
    assert wait_for(lambda: "returncode=0" in run(browser, "alice", queue)["stdout"], 30, 3)
    out = run(browser, "alice", SWEEP)["stdout"]
    assert "returncode=0" in out, out
    cluster = int(out.split("stdout='")[1].split(".")[0])
    ads = json.loads(
        hub.check_output(f"condor_q -json {cluster} -attributes Owner,AccountingGroup,CondorlabSealed || true") or "[]"
    ) or json.loads(hub.check_output(f"condor_history -json {cluster} -attributes Owner,AccountingGroup"))
    assert len(ads) == 5 and {(a["Owner"], a["AccountingGroup"]) for a in ads} == {("alice", "group_physics.alice")}
    assert not [a for a in ads if a.get("CondorlabSealed")], "a job from the lab is no session"
    done = f"import subprocess; print(subprocess.run(['condor_q', '{cluster}', '-af', 'JobStatus'], capture_output=True, text=True).stdout.split())"
    assert wait_for(lambda: run(browser, "alice", done)["stdout"].strip() == "[]", 180, 5), "the sweep ended"
    outputs = run(browser, "alice", "import glob; print(sorted(open(f).read() for f in glob.glob('sweep-*.out')))")
    assert "3 squared is 9\\nalice\\n" in outputs["stdout"], outputs


def test_bob_s_lab_token_can_neither_remove_nor_edit_alice_s_jobs(alice_lab, browser, hub):
    cluster = hub.check_output(
        "cd /tmp && runuser -u alice -- condor_submit -terse -a 'executable = /bin/sleep' -a 'arguments = 300' "
        "-a 'should_transfer_files = YES' -a 'request_memory = 64' -a 'queue' /dev/null"
    ).split(".")[0]
    try:
        browser("stop", "bob")
        bob = browser("start", "bob", "180")
        assert "ready_after" in bob, bob
        attempt = (
            "import subprocess\n"
            "for command in (['condor_q', '-af', 'Owner'], "
            f"['condor_rm', '{cluster}'], ['condor_qedit', '{cluster}', 'JobPrio', '10']):\n"
            "    done = subprocess.run(command, capture_output=True, text=True)\n"
            "    print(command[0], done.returncode, done.stdout.strip(), done.stderr.strip())\n"
        )
        out = run(browser, "bob", attempt)["stdout"].splitlines()
        assert out[0].startswith("condor_q 0 bob"), f"bob's token works for bob: {out}"
        assert out[1].startswith(f"condor_rm 1  Couldn't find/remove all jobs in cluster {cluster}"), out
        assert out[2].startswith("condor_qedit 1  Failed to set attribute"), out
        ad = json.loads(hub.check_output(f"condor_q -json {cluster} -attributes JobStatus,JobPrio"))[0]
        assert ad["JobStatus"] in (1, 2) and ad.get("JobPrio", 0) == 0, (ad, out)
    finally:
        browser("stop", "bob")
        hub.run(f"condor_rm {shlex.quote(cluster)}")


STOLEN = "/tmp/stolen-tokens"


def stolen_submit(hub) -> str:
    """bob, on the access point, submits with only what he copied out of alice's lab: its tokens."""
    return hub.run(
        f"cd /tmp && runuser -u bob -- env _CONDOR_SEC_TOKEN_DIRECTORY={STOLEN} "
        "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS=IDTOKENS condor_submit -terse -a 'executable = /bin/true' "
        "-a 'hold = true' -a 'queue' /dev/null"
    )


def test_a_token_copied_out_of_a_lab_and_one_fetched_with_it_are_refused_soon_after_the_session(browser, hub):
    browser("stop", "alice")
    assert "ready_after" in browser("start", "alice", "180")
    copy = (
        "import os, subprocess\n"
        "own = open(os.path.join(os.environ['_CONDOR_SEC_TOKEN_DIRECTORY'], 'session')).read().strip()\n"
        "fetched = subprocess.run(['condor_token_fetch', '-lifetime', '3600'], capture_output=True, text=True)\n"
        "print(own)\n"
        "print(fetched.stdout.strip())\n"
    )
    own, fetched = run(browser, "alice", copy)["stdout"].split()
    hub.run(f"rm -rf {STOLEN} && install -d -o bob -m 0700 {STOLEN}")
    for name, token in (("own", own), ("fetched", fetched)):
        hub.run(f"umask 077 && printf '%s\\n' {shlex.quote(token)} > {STOLEN}/{name} && chown bob {STOLEN}/{name}")
    held = []
    try:
        first = stolen_submit(hub)
        assert first.rc == 0, f"while her session runs, the copies work: {first.stderr}"
        held.append(first.stdout.split(".")[0])
        browser("stop", "alice")
        ended = time.monotonic()
        lifetime = 60  # the test bed's jupyterhub_lab_token_lifetime and htcondor_user_session_duration
        while (attempt := stolen_submit(hub)).rc == 0 and time.monotonic() - ended < 2 * lifetime + 30:
            held.append(attempt.stdout.split(".")[0])
            time.sleep(5)
        refused_after = time.monotonic() - ended
        assert attempt.rc != 0, f"still accepted {refused_after:.0f} s after the session ended"
        assert refused_after <= 2 * lifetime, f"refused only {refused_after:.0f} s after the session ended"
        print(
            f"\n  [lab pool] copied tokens refused {refused_after:.0f} s after the session ended: {attempt.stderr[-200:]}"
        )
    finally:
        hub.run(f"rm -rf {STOLEN}")
        for cluster in held:
            hub.run(f"condor_rm {shlex.quote(cluster)}")
