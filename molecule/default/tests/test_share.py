"""The interactive share: sessions start while every batch slot is busy, batch jobs never enter the share,
a session takes a batch slot only when its profile allows it, and the pending page says where it waits."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import HUB_URL, chromium_login, wait_for

SHARE = "CondorlabInteractive =?= true"
SLOW_SPAWN_TIMEOUT = 10  # JupyterHub's default: a start still pending then is answered 202


def jobs(hub, constraint: str) -> list[dict]:
    out = hub.check_output(
        f"condor_q -all -json -constraint '{constraint}' -attributes ClusterId,ProcId,Owner,JobStatus,RemoteHost"
    )
    return json.loads(out) if out.strip() else []


def slot_is_share(cm, remote_host: str) -> bool:
    out = cm.check_output(f"condor_status '{remote_host}' -af CondorlabInteractive")
    return out.strip().lower() == "true"


def submit(hub, user: str, *args: str, count: int = 1) -> str:
    """Submit sleeping jobs as a user; return the cluster id."""
    command = " ".join(f"-a '{a}'" for a in args)
    out = hub.check_output(
        f"cd /tmp && runuser -u {user} -- condor_submit -terse -a 'executable = /bin/sleep' "
        f"-a 'transfer_executable = false' -a 'should_transfer_files = YES' {command} -a 'queue {count}' /dev/null"
    )
    return out.split(".")[0]


def test_the_execute_nodes_offer_a_share_beside_the_batch_slot(cm):
    slots = json.loads(
        cm.check_output(
            "condor_status -json -constraint 'PartitionableSlot' -attributes Machine,TotalSlotCpus,CondorlabInteractive"
        )
    )
    share = sorted((s["Machine"], s["TotalSlotCpus"]) for s in slots if s.get("CondorlabInteractive"))
    batch = sorted(s["Machine"] for s in slots if not s.get("CondorlabInteractive"))
    assert [cpus for _, cpus in share] == [4, 4], "one core kept per node, offered as 4 session CPUs"
    assert len(batch) == 2
    negotiators = cm.check_output("condor_status -negotiator -af Name").split()
    assert any(n.startswith("NEGOTIATOR_INTERACTIVE@") for n in negotiators) and len(negotiators) == 2


@pytest.mark.parametrize("knob", ["START", "PREEMPT", "WANT_HOLD", "MAXJOBRETIREMENTTIME", "MachineMaxVacateTime"])
def test_the_share_s_policy_reaches_the_startd_whole(execute_nodes, knob):
    # Each knob extends a value HTCondor or the site may have set, by a macro HTCondor must expand:
    # one left as text would make the expression unreadable to the startd.
    for node in execute_nodes:
        value = node.check_output(f"condor_config_val {knob}")
        assert "$(" not in value and "CondorlabInteractive" in value, (node.backend.hostname, knob, value)


def quotas(cm, *negotiator: str) -> dict[str, float]:
    """The effective group quotas a negotiator computed in its last cycle."""
    out = cm.check_output(f"condor_userprio -quotas -allusers {' '.join(negotiator)}")
    return {line.split()[0]: float(line.split()[1]) for line in out.splitlines() if line.startswith("group_")}


def test_each_negotiator_applies_the_group_quotas_to_its_own_slots(cm):
    """The dynamic quotas are shares of the interactive share's 8 CPUs for one negotiator and of the
    two batch cores for the other; each keeps its own priorities (accountant)."""
    dumped = cm.check_output("condor_config_val -dump GROUP_QUOTA_DYNAMIC_")
    dynamic = {
        line.split("=")[0].strip().removeprefix("GROUP_QUOTA_DYNAMIC_"): float(line.split("=")[1])
        for line in dumped.splitlines()
        if line.startswith("GROUP_QUOTA_DYNAMIC_")
    }
    assert dynamic, dumped
    (interactive,) = [n for n in cm.check_output("condor_status -negotiator -af Name").split() if "@" in n]

    def dynamic_quotas(*negotiator: str) -> dict[str, float]:
        # groups without a dynamic quota (the trial group) have none to compare
        return {group: quota for group, quota in quotas(cm, *negotiator).items() if group in dynamic}

    in_share = {group: round(8 * share, 2) for group, share in dynamic.items()}
    assert wait_for(lambda: dynamic_quotas("-name", interactive) == in_share, 60), (
        dynamic_quotas("-name", interactive),
        in_share,
    )
    assert dynamic_quotas() == {group: round(2 * share, 2) for group, share in dynamic.items()}
    files = cm.check_output(
        "condor_config_val ACCOUNTANT_DATABASE_FILE NEGOTIATOR_INTERACTIVE.ACCOUNTANT_DATABASE_FILE"
    )
    assert len(set(files.split())) == 2, files


@pytest.fixture(scope="module")
def batch_busy(hub):
    """Every batch slot of the bed busy with bob's ordinary batch jobs, and more of them waiting."""
    cluster = submit(hub, "bob", "arguments = 3600", "request_cpus = 1", "request_memory = 64", count=3)
    assert wait_for(lambda: len(jobs(hub, 'Owner == "bob" && JobStatus == 2 && CondorlabSession =!= true')) >= 2, 150)
    yield cluster
    hub.run(f"condor_rm {cluster}")


def test_a_session_starts_in_the_share_while_every_batch_slot_is_busy(batch_busy, browser, hub, cm):
    form = browser("get", "alice", "/hub/spawn")["text"]
    assert "physics: small: 1 CPU, 512 MB, up to 2 h — starts now" in form, form[-3000:]
    started = browser("start", "alice", "120")
    try:
        assert "ready_after" in started, started
        (job,) = jobs(hub, 'Owner == "alice" && CondorlabSession =?= true')
        assert slot_is_share(cm, job["RemoteHost"]), job
    finally:
        browser("stop", "alice")


def test_batch_jobs_never_take_the_share(batch_busy, hub, cm):
    # Three batch jobs for two batch slots: the third waits although the share has room.
    running = jobs(hub, 'Owner == "bob" && CondorlabSession =!= true && JobStatus == 2')
    assert len(running) == 2 and not any(slot_is_share(cm, j["RemoteHost"]) for j in running)
    assert len(jobs(hub, 'Owner == "bob" && CondorlabSession =!= true && JobStatus == 1')) == 1
    free = sum(
        int(c) for c in cm.check_output(f"condor_status -constraint '{SHARE} && PartitionableSlot' -af Cpus").split()
    )
    assert free > 0, "the share had room all along"


def cycles(cm, log: str) -> tuple[int, int]:
    """How many cycles a negotiator has started and finished, from its own log (its collector ad is
    updated only every NEGOTIATOR_UPDATE_INTERVAL)."""
    out = cm.run(
        "awk '/Started Negotiation Cycle/ {s++} /Finished Negotiation Cycle/ {f++} END {print s+0, f+0}' "
        f"/var/log/condor/{log}"
    ).stdout.split()
    return (int(out[0]), int(out[1])) if len(out) == 2 else (0, 0)


def interactive_cycles(cm) -> int:
    """How many cycles the interactive negotiator has finished."""
    return cycles(cm, "NegotiatorInteractiveLog")[1]


def test_a_job_marked_as_a_session_by_hand_cannot_hold_the_share(hub, cm):
    """A walltime no profile gives keeps a job out of the share, though it says it is a session."""
    before = interactive_cycles(cm)
    forged = submit(
        hub,
        "carol",
        "arguments = 600",
        "request_cpus = 1",
        "request_memory = 64",
        "+CondorlabSession = true",
        "+CondorlabWalltime = 9999999",
        f"requirements = {SHARE}",
    )
    try:
        # Two whole cycles of the interactive negotiator after the submission.
        assert wait_for(lambda: interactive_cycles(cm) >= before + 2, 60), "the interactive negotiator cycles"
        (job,) = jobs(hub, f"ClusterId == {forged}")
        assert job["JobStatus"] == 1, job
    finally:
        hub.run(f"condor_rm {forged}")


@pytest.fixture
def share_full(hub):
    """Both nodes' shares taken by jobs of 4 CPUs with a profile's walltime, removed afterwards.

    The test plays the hub: root seals carol's jobs as condorlab-seal would (a
    queue super user; carol herself cannot). They carry no session marker, so
    the sweep, which removes session jobs no server owns, leaves them alone.
    """
    fillers = [
        submit(
            hub,
            "carol",
            "arguments = 3600",
            "request_cpus = 4",
            "request_memory = 64",
            "+CondorlabWalltime = 3600",
            f"requirements = {SHARE}",
        )
        for _ in range(2)
    ]
    for filler in fillers:
        hub.check_output(f"condor_qedit {filler} CondorlabSealed true")
    assert wait_for(lambda: len(jobs(hub, 'Owner == "carol" && JobStatus == 2')) == 2, 60), "the fillers run"
    yield
    hub.run(f"condor_rm {' '.join(fillers)}")


def test_the_pending_page_names_the_share_and_the_place(batch_busy, share_full, browser, hub, chromium, passwords):
    from selenium.webdriver.common.by import By

    first = browser("progress", "bob", "8")
    second = browser("progress", "alice", "8")
    try:
        assert first["start_status"] in (201, 202) and second["start_status"] in (201, 202), (first, second)
        waiting = "is waiting for a slot in the interactive share: 0 of 8 CPUs free"
        assert any(waiting in m and "no session ahead of you" in m for m in first["messages"]), first
        assert any(waiting in m and "1 session ahead of you" in m for m in second["messages"]), second
        # The page alice's browser shows while she waits.
        chromium_login(chromium, "alice", passwords["alice"])
        chromium.get(f"{HUB_URL}/hub/spawn-pending/alice")

        def shown():
            text = chromium.find_element(By.ID, "progress-message").text
            return text if "interactive share" in text else ""

        text = wait_for(shown, 20)
        screenshots = os.environ.get("CONDORLAB_SCREENSHOTS")
        if screenshots:
            chromium.save_screenshot(os.path.join(screenshots, "pending-share-full.png"))
        assert "0 of 8 CPUs free, 1 session ahead of you" in text, text
    finally:
        browser("stop", "bob")
        browser("stop", "alice")


def test_only_a_profile_that_allows_it_falls_back_to_a_batch_slot(share_full, browser, hub, cm):
    # The batch slots are free (bob's batch jobs go); the share is full. alice waits through a whole
    # cycle of the batch negotiator (every 60 s) without taking a batch slot.
    hub.run("condor_rm bob -constraint 'CondorlabSession =!= true'")
    assert wait_for(lambda: not jobs(hub, 'Owner == "bob" && CondorlabSession =!= true'), 60)

    # The negotiators see the freed cores when the startds next update the collector (UPDATE_INTERVAL,
    # 300 s by default).
    def batch_cpus_free() -> int:
        out = cm.check_output("condor_status -constraint 'PartitionableSlot && CondorlabInteractive =!= true' -af Cpus")
        return sum(int(c) for c in out.split())

    assert wait_for(lambda: batch_cpus_free() == 2, 400, interval=5), "the collector shows both batch cores free"
    # carol (astro/quick) starts while alice waits: she takes one batch core at the batch negotiator's
    # next cycle, and the other stays free through a whole cycle that began after alice's job was queued.
    waiting = 'Owner == "alice" && CondorlabSession =?= true'
    with ThreadPoolExecutor(max_workers=2) as background:
        carol = background.submit(browser, "start", "carol", "150", json.dumps({"profile": "astro/quick"}))
        alice = background.submit(browser, "progress", "alice", "150", json.dumps({"profile": "physics/small"}))
        asked = time.monotonic()
        try:
            try:
                assert wait_for(lambda: jobs(hub, waiting), 30), "alice's session job is queued"
                started_before, _ = cycles(cm, "NegotiatorLog")

                def a_whole_cycle_since() -> bool:
                    started, finished = cycles(cm, "NegotiatorLog")
                    return started > started_before and finished >= started

                assert wait_for(a_whole_cycle_since, 90, interval=2), "the batch negotiator cycles"
                (job,) = jobs(hub, waiting)
                assert job["JobStatus"] == 1, "physics/small waits for the share although batch slots are free"
                assert batch_cpus_free() >= 1, "a batch core stayed free while alice waited"
                # JupyterHub answers a start still pending after its slow_spawn_timeout (10 s, 202): a stop
                # before that would cut her start request short.
                time.sleep(max(0.0, asked + SLOW_SPAWN_TIMEOUT + 1 - time.monotonic()))
            finally:
                browser("stop", "alice")
            assert alice.result()["start_status"] in (201, 202), alice.result()
            started = carol.result()
            assert "ready_after" in started, started
            (job,) = jobs(hub, 'Owner == "carol" && CondorlabSession =?= true && JobStatus == 2 && RequestCpus == 1')
            assert not slot_is_share(cm, job["RemoteHost"]), "astro/quick may use a batch slot, and did"
        finally:
            carol.result()
            browser("stop", "carol")
