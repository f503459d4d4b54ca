"""The session record and the lab watch, on their own."""

from __future__ import annotations

import pytest
from condorlab.identity import IdentityError
from condorlab.jobs import JobInfo, State
from condorlab.policy import LabWatch, over_walltime, tampered
from condorlab.session import Session

# A session as the previous release kept it in the hub's database (a plain dict).
STORED = {
    "group": "physics",
    "profile": "small",
    "label": "small (1 CPU)",
    "accounting_group": "group_physics",
    "request_cpus": 1,
    "request_memory_mb": 512,
    "request_gpus": 0,
    "walltime": 3600,
    "requirements": "",
    "fallback": True,
    "cert_sha256": "ab" * 32,
    "started": 1764500000.5,
    "site_note": "a key this release does not name",
}


def test_a_stored_session_of_the_previous_release_loads_and_round_trips():
    session = Session.from_dict(STORED)
    assert (session.group, session.request_memory_mb, session.started) == ("physics", 512, 1764500000.5)
    assert session.extra == {"site_note": "a key this release does not name"}
    assert Session.from_dict(session.to_dict()) == session
    assert session.request() == {"group": "physics", "profile": "small", "request_cpus": 1, "request_memory_mb": 512}
    assert Session.from_dict({}) is None and Session.from_dict(None) is None


def test_walltime_and_tampering():
    session = Session.from_dict(STORED)
    assert not over_walltime(session, now=session.started + 3599)
    assert over_walltime(session, now=session.started + 3600)
    assert not over_walltime(Session.from_dict({**STORED, "walltime": 0}), now=2e9)
    assert tampered(session, JobInfo(State.RUNNING, request_cpus=1, request_memory_mb=512)) == ""
    assert tampered(session, JobInfo(State.RUNNING, request_cpus=8, request_memory_mb=512)) == (
        "RequestCpus 8 (submitted 1)"
    )


def test_the_lab_watch_tells_a_blip_from_a_lost_node_and_a_dead_lab():
    watch = LabWatch(lost_after=45, exit_grace=8)
    assert watch.judge(TimeoutError(), now=100) is None
    assert watch.judge(None, now=130) is None and watch.unreachable_since == 0, "it answered: a blip"
    assert watch.judge(OSError("no route"), now=140) is None
    assert watch.judge(OSError("no route"), now=184) is None
    assert watch.judge(OSError("no route"), now=185) == "node-lost"
    watch.reset()
    assert watch.judge(ConnectionRefusedError(), now=200) is None
    assert watch.judge(ConnectionRefusedError(), now=208) == "lab-died"
    assert watch.judge(IdentityError("another certificate"), now=209) == "lost", "at once"
    with pytest.raises(ValueError):
        watch.judge(ValueError("a bug is not a lost lab"))
