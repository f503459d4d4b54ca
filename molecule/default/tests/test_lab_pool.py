"""The pool from the lab, as its user: HTCondor's tools in a user's lab, with a token of her own.

Everything a user does runs in a kernel of her own lab, through the proxy (hubclient.py run), as a
notebook or a terminal of the lab would; what the pool then holds is read on the access point.

The campaign (module fixture) is submitted at once, so that its jobs share the batch negotiator's
cycles: alice (shared filesystem) submits a sweep and two long jobs, one on each node; carol (no
shared filesystem) runs the example notebook her new lab got, and submits a job of her own with
condor_submit -spool, whose output she fetches with condor_transfer_data.
"""

from __future__ import annotations

import csv
import io
import json
import shlex
import time
from pathlib import Path

import pytest
from conftest import wait_for
from test_share import jobs

NOTEBOOK = "your-batch-jobs.ipynb"
# Where the labs' work directories list the example notebooks given (condorlab_session.wrapper.EXAMPLES_SHIPPED).
EXAMPLES_GIVEN = "/shared/alice/.condorlab-examples /home/carol/condorlab/.condorlab-examples"
NOTEBOOK_SOURCE = Path(__file__).parents[3] / "roles" / "singleuser" / "files" / "examples" / NOTEBOOK

# alice's sweep, as she would write it in her lab (her shared directory: no spooling).
SWEEP = """\
cat > sweep.sh <<'EOF'
#!/bin/sh
echo "$1 squared is $(( $1 * $1 ))"
id -un
EOF
chmod 0755 sweep.sh
cat > sweep.sub <<'EOF'
executable = sweep.sh
arguments = $(Item)
output = sweep-$(Item).out
error = sweep-$(Item).err
log = sweep.log
request_cpus = 1
request_memory = 64MB
should_transfer_files = YES
queue Item in (1 2 3 4 5)
EOF
condor_submit -terse sweep.sub
"""

# A job of alice's on NODE that says where it runs and stays until she ends it.
LONG_JOB = """\
printf '#!/bin/sh\\necho "started on $(hostname)"\\nexec sleep 600\\n' > long.sh && chmod 0755 long.sh
condor_submit -terse -a 'executable = long.sh' -a 'output = long-{node}.out' -a 'request_cpus = 1' \
  -a 'request_memory = 64MB' -a 'should_transfer_files = YES' -a 'requirements = Machine == "{node}"' -a queue /dev/null
"""

# carol's own job, from the command line of a lab with no shared filesystem; submitted first, it keeps
# her slot long enough for the notebook's jobs to follow on it.
SPOOLED = """\
echo 'spooled input' > carol-in.txt
printf '#!/bin/sh\\ncat carol-in.txt\\nid -un\\nsleep 15\\n' > carol-job.sh && chmod 0755 carol-job.sh
condor_submit -terse -spool -a 'executable = carol-job.sh' -a 'transfer_input_files = carol-in.txt' \
  -a 'output = carol-out.txt' -a 'request_cpus = 1' -a 'request_memory = 64MB' -a 'should_transfer_files = YES' \
  -a queue /dev/null
"""


def in_lab(browser, user: str, code: str, timeout: float = 120) -> str:
    """What code printed in a new kernel of user's lab."""
    result = browser("run", user, code, str(timeout))
    assert result.get("status") == "ok", result
    return result["stdout"]


def lab_shell_code(*commands: str, timeout: float = 60) -> str:
    """Kernel code that runs shell commands in the lab's directory, as its terminal would, and prints
    [{rc, out, err}, ...] as JSON on its last line."""
    return (
        "import json, subprocess\n"
        f"done = [subprocess.run(c, shell=True, capture_output=True, text=True, timeout={timeout}) for c in {list(commands)!r}]\n"
        "print(json.dumps([{'rc': d.returncode, 'out': d.stdout, 'err': d.stderr} for d in done]))\n"
    )


def lab_shell(browser, user: str, *commands: str, timeout: float = 60) -> list[dict]:
    out = in_lab(browser, user, lab_shell_code(*commands, timeout=timeout), timeout * len(commands) + 30)
    return json.loads(out.strip().splitlines()[-1])


def cluster_of(submitted: dict) -> str:
    assert submitted["rc"] == 0, submitted
    return submitted["out"].strip().split(".")[0]


def notebook_code(notebook: dict) -> str:
    return "\n".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code")


@pytest.fixture(scope="module")
def campaign(browser, hub):
    """alice's and carol's labs, and what each submitted from hers (carol's notebook still runs)."""
    # New labs: nothing left from an earlier test, the example notebook not given yet.
    hub.run(f"rm -f /shared/alice/{NOTEBOOK} /home/carol/condorlab/{NOTEBOOK} {EXAMPLES_GIVEN}")
    for user in ("alice", "carol"):
        browser("stop", user)
        started = browser("start", user, "180")
        assert "ready_after" in started, started
    # carol's new lab holds the example notebook; she runs it (and her spooled job) as one kernel would.
    shipped = browser("get", "carol", f"/user/carol/api/contents/{NOTEBOOK}")
    assert shipped["status"] == 200, shipped
    notebook = json.loads(shipped["text"])["content"]
    carol_code = (
        lab_shell_code(SPOOLED)
        + "spooled = done[0].stdout.strip().split('.')[0]\n"
        + notebook_code(notebook)
        + "\nwatch(f'ClusterId == {spooled}')\n"
        + "print(subprocess.run(['condor_transfer_data', spooled], capture_output=True, text=True))\n"
        + "print('spooled output:', repr(open('carol-out.txt').read()), 'cluster', spooled)\n"
    )
    carol = browser.background("run", "carol", carol_code, "600")
    # alice: the tools work once her lab's first token is there (it comes while the lab starts).
    ready = lab_shell(
        browser, "alice", "for i in $(seq 30); do condor_q -totals >/dev/null && exit 0; sleep 1; done; exit 1"
    )
    assert ready[0]["rc"] == 0, ready
    # The sweep first: her first slot runs it, then the long job of that node (HTCondor reuses the claim).
    sweep, wn1, wn2 = lab_shell(browser, "alice", SWEEP, LONG_JOB.format(node="wn1"), LONG_JOB.format(node="wn2"))
    ran = {"alice": {"sweep": cluster_of(sweep), "wn1": cluster_of(wn1), "wn2": cluster_of(wn2)}, "carol": carol}
    try:
        yield ran
    finally:
        hub.run(f"condor_rm {ran['alice']['wn1']} {ran['alice']['wn2']}")
        for user in ("alice", "carol"):
            browser("stop", user)


def test_every_new_lab_gets_the_example_notebook(campaign, hub):
    shipped = hub.file(f"/shared/alice/{NOTEBOOK}")  # alice's lab opens in her shared directory
    assert shipped.exists and shipped.user == "alice" and shipped.mode == 0o600
    assert json.loads(shipped.content_string) == json.loads(NOTEBOOK_SOURCE.read_text())


def test_alice_s_jobs_from_her_lab_run_as_her_in_her_group_and_her_lab_lists_them(campaign, browser, hub):
    mine = campaign["alice"]
    listed = lab_shell(browser, "alice", "condor_q -af ClusterId ProcId")[0]
    assert listed["rc"] == 0, listed
    for cluster in mine.values():
        assert f"{cluster} 0" in listed["out"], listed
    assert f"{mine['sweep']} 4" in listed["out"], listed
    clusters = " ".join(mine.values())
    attributes = "-attributes ClusterId,Owner,AccountingGroup,CondorlabSealed"
    ads = json.loads(hub.check_output(f"condor_q -json {clusters} {attributes}") or "[]")
    ads += json.loads(hub.check_output(f"condor_history -json {clusters} {attributes}") or "[]")
    assert {(a["Owner"], a["AccountingGroup"]) for a in ads} == {("alice", "group_physics.alice")}, ads
    assert {a["ClusterId"] for a in ads} == {int(c) for c in mine.values()}
    assert not [a for a in ads if a.get("CondorlabSealed")], "a job from the lab is no session"


def test_a_job_from_the_lab_can_neither_claim_the_interactive_share_nor_another_group(campaign, browser, hub):
    forged, other_group = lab_shell(
        browser,
        "alice",
        "condor_submit -terse -a 'executable = /bin/true' -a '+CondorlabSealed = true' -a '+CondorlabSession = true' "
        "-a '+CondorlabWalltime = 600' -a 'hold = true' -a queue /dev/null",
        "condor_submit -terse -a 'executable = /bin/true' -a 'accounting_group = group_astro' "
        "-a 'accounting_group_user = carol' -a 'hold = true' -a queue /dev/null",
    )
    assert other_group["rc"] != 0 and "Permission denied setting accounting_group" in other_group["err"], other_group
    cluster = cluster_of(forged)
    try:
        ad = json.loads(hub.check_output(f"condor_q -json {cluster} -attributes CondorlabSealed,AccountingGroup"))[0]
        assert ad.get("CondorlabSealed") is None, "only the hub seals a session; the share starts nothing else"
        assert ad["AccountingGroup"] == "group_physics.alice", ad
        edit = lab_shell(browser, "alice", f"condor_qedit {cluster} CondorlabSealed true")[0]
        assert edit["rc"] != 0, edit
        assert (
            json.loads(hub.check_output(f"condor_q -json {cluster} -attributes CondorlabSealed"))[0].get(
                "CondorlabSealed"
            )
            is None
        )
    finally:
        hub.run(f"condor_rm {cluster}")


STOLEN = "/tmp/stolen-tokens"


def stolen_submit(hub) -> str:
    """bob, on the access point, submits with only what he copied out of alice's lab: its tokens."""
    return hub.run(
        f"cd /tmp && runuser -u bob -- env _CONDOR_SEC_TOKEN_DIRECTORY={STOLEN} "
        "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS=IDTOKENS condor_submit -terse -a 'executable = /bin/true' "
        "-a 'hold = true' -a 'queue' /dev/null"
    )


def test_a_token_copied_out_of_a_lab_and_one_fetched_with_it_are_refused_soon_after_the_session(campaign, browser, hub):
    copy = (
        "import os, subprocess\n"
        "own = open(os.path.join(os.environ['_CONDOR_SEC_TOKEN_DIRECTORY'], 'session')).read().strip()\n"
        "fetched = subprocess.run(['condor_token_fetch', '-lifetime', '3600'], capture_output=True, text=True)\n"
        "print(own)\n"
        "print(fetched.stdout.strip())\n"
    )
    own, fetched = in_lab(browser, "alice", copy).split()
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
        # Her batch jobs went on meanwhile; the next tests use her lab again.
        assert "ready_after" in browser("start", "alice", "180")


def test_the_sweep_s_output_lands_in_alice_s_lab(campaign, browser, hub):
    sweep = campaign["alice"]["sweep"]
    assert wait_for(lambda: not jobs(hub, f"ClusterId == {sweep}"), 240, 5), "the sweep ended"
    outputs = in_lab(browser, "alice", "import glob; print(sorted(open(f).read() for f in glob.glob('sweep-*.out')))")
    assert "3 squared is 9\\nalice\\n" in outputs, outputs


def test_carol_runs_the_example_notebook_in_a_lab_without_a_shared_filesystem(campaign, hub):
    said, result = campaign["carol"]
    ran = result(600)
    assert ran.get("status") == "ok", (ran, said()[-2000:])
    out = ran["stdout"]
    for x in range(1, 6):
        assert f"{x} squared is {x * x}, computed on wn" in out, out
    assert "is held: " in out and "/opt/not-installed-here/analysis" in out, out
    assert "spooled output: 'spooled input\\ncarol\\n'" in out, out
    sweep = out.split("submitted cluster ")[1].split(":")[0]
    spooled = out.rsplit("cluster ", 1)[1].split()[0]
    # Fetched, the spooled jobs leave the queue by themselves (the schedd checks every minute), completed;
    # they ran as carol, in her group.
    assert wait_for(lambda: not jobs(hub, f"ClusterId == {sweep} || ClusterId == {spooled}"), 90, 3), out
    ads = json.loads(
        hub.check_output(f"condor_history -json {sweep} {spooled} -attributes Owner,AccountingGroup,JobStatus")
    )
    assert len(ads) == 6 and {(a["Owner"], a["AccountingGroup"], a["JobStatus"]) for a in ads} == {
        ("carol", "group_astro.carol", 4)
    }, ads
    # The accounting counts them as batch jobs from her lab, in her group (the token's id is in each job).
    since = min(int(a) for a in hub.check_output(f"condor_history {sweep} {spooled} -af QDate").split()) - 1
    report = hub.check_output(f"condorlab-accounting --since {since} --format csv")
    (carol,) = [r for r in csv.DictReader(io.StringIO(report)) if r["user"] == "carol"]
    assert carol["group"] == "group_astro" and int(carol["lab_jobs"]) >= 6, report


def long_jobs_running(hub, campaign) -> dict:
    mine = campaign["alice"]
    wait = " || ".join(f"ClusterId == {mine[node]}" for node in ("wn1", "wn2"))
    assert wait_for(lambda: len(jobs(hub, f"({wait}) && JobStatus == 2")) == 2, 240, 3), "both long jobs run"
    return mine


def test_from_her_lab_alice_reaches_her_running_batch_jobs_as_far_as_the_site_allows(campaign, browser, hub):
    mine = long_jobs_running(hub, campaign)
    tail, allowed, refused = lab_shell(
        browser,
        "alice",
        f"condor_tail {mine['wn1']}",
        f"timeout 60 condor_ssh_to_job {mine['wn1']} hostname",
        f"timeout 60 condor_ssh_to_job {mine['wn2']} hostname",
    )
    assert tail["rc"] == 0 and "started on wn1" in tail["out"], tail
    assert allowed["rc"] == 0 and allowed["out"].strip() == "wn1", allowed  # the pool's own setting
    # wn2: condorlab_ssh_to_batch_jobs false, which its slots advertise; the schedd refuses at once.
    assert refused["rc"] != 0 and "wn2" not in refused["out"], refused
    assert "denied by SCHEDD_ENABLE_SSH_TO_JOB" in refused["err"], refused


def test_bob_s_lab_token_can_neither_touch_alice_s_jobs_nor_read_her_sandbox(campaign, browser, hub):
    target = long_jobs_running(hub, campaign)["wn1"]  # on wn1, where batch jobs may be entered
    browser("stop", "bob")
    assert "ready_after" in browser("start", "bob", "180")
    try:
        attempts = lab_shell(
            browser,
            "bob",
            "condor_q -af Owner",
            f"condor_rm {target}",
            f"condor_qedit {target} JobPrio 10",
            f"timeout 60 condor_ssh_to_job {target} cat long-wn1.out",
            f"condor_transfer_data {target}",
        )
    finally:
        browser("stop", "bob")
    listed, removed, edited, entered, fetched = attempts
    print(f"\n  [lab pool] bob's attempts: {json.dumps(attempts)[:3000]}")
    assert listed["rc"] == 0 and set(listed["out"].split()) <= {"bob"}, f"bob's token works for bob: {attempts}"
    assert removed["rc"] != 0 and "Couldn't find/remove all jobs" in removed["out"] + removed["err"], removed
    assert edited["rc"] != 0 and "Failed to set attribute" in edited["out"] + edited["err"], edited
    assert entered["rc"] != 0 and "started on" not in entered["out"], entered
    assert fetched["rc"] != 0 or "started on" not in fetched["out"], fetched
    ad = json.loads(hub.check_output(f"condor_q -json {target} -attributes JobStatus,JobPrio"))[0]
    assert ad["JobStatus"] == 2 and ad.get("JobPrio", 0) == 0, (ad, attempts)
