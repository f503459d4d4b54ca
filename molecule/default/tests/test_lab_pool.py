"""The pool from the lab, as its user: HTCondor's tools in alice's lab, with a token of her own.

Everything runs in a kernel of the user's own lab, through the proxy (hubclient.py run), as a notebook
would; what the pool then holds is read on the access point.
"""

from __future__ import annotations

import json
import shlex

import pytest
from conftest import wait_for

SWEEP = """
import subprocess, textwrap
description = textwrap.dedent('''
    executable = /bin/sh
    arguments = "-c 'echo $(Item) squared is $$(( $(Item) * $(Item) )); id -un'"
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
        bob = browser("start", "bob", "180")
        assert "ready_after" in bob, bob
        attempt = (
            "import subprocess\n"
            f"for command in (['condor_rm', '{cluster}'], ['condor_qedit', '{cluster}', 'JobPrio', '10']):\n"
            "    done = subprocess.run(command, capture_output=True, text=True)\n"
            "    print(command[0], done.returncode, done.stdout.strip(), done.stderr.strip())\n"
        )
        out = run(browser, "bob", attempt)["stdout"]
        ad = json.loads(hub.check_output(f"condor_q -json {cluster} -attributes JobStatus,JobPrio"))[0]
        assert ad["JobStatus"] in (1, 2) and ad.get("JobPrio", 0) == 0, (ad, out)
    finally:
        browser("stop", "bob")
        hub.run(f"condor_rm {shlex.quote(cluster)}")
