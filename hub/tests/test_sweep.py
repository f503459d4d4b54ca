"""The orphan sweep removes only session jobs no server of the hub owns, after a grace period."""

from __future__ import annotations

from condorlab import sweep

NOW = 1_000_000.0


def ad(cluster, owner, server, status=2, queued=NOW - 3600):
    return {"ClusterId": cluster, "Owner": owner, "CondorlabServer": server, "JobStatus": status, "QDate": queued}


USERS = [
    {"name": "alice", "servers": {"": {"ready": True, "pending": None, "state": {"job_id": "12"}}}},
    # bob's session is starting: its job id is saved only once the start is done.
    {"name": "bob", "servers": {"": {"ready": False, "pending": "spawn", "state": {}}}},
    {"name": "carol", "servers": {"lab2": {"ready": True, "pending": None, "state": {"job_id": "30"}}}},
]
ADS = [
    ad(12, "alice", "alice/default"),  # alice's own session
    ad(11, "alice", "alice/default"),  # an older job of alice's server: the remove failed
    ad(20, "bob", "bob/default", status=1),  # bob's start, not saved yet
    ad(30, "carol", "carol/named-lab2"),
    ad(40, "erin.lee", "erin.lee/default"),  # the hub has no server for erin.lee (a lost database)
    ad(41, "erin.lee", "erin.lee/default", status=3),  # already being removed
    ad(50, "frank", "frank/default", queued=NOW + 100),  # queued after the first round
    ad(60, "carol", ""),  # a batch job posing as a session: no server of the hub owns it
]


def run(sweeper, now, users=lambda: USERS, ads=lambda: ADS):
    removed = []
    sweep.sweep_once(sweeper, users, ads, removed.append, now=now)
    return sorted(job.cluster for job in removed)


def test_orphans_go_after_the_grace_period_and_the_hub_s_own_never():
    sweeper = sweep.Sweeper(grace=600)
    assert run(sweeper, NOW) == [], "first seen now: nothing is due yet"
    assert run(sweeper, NOW + 300) == []
    assert run(sweeper, NOW + 600) == [11, 40, 60], "orphaned for the grace period"
    assert run(sweeper, NOW + 700) == [11, 40, 50, 60], "frank's job is now older than the grace period too"


def test_a_job_that_is_owned_again_starts_its_grace_anew():
    sweeper = sweep.Sweeper(grace=600)
    run(sweeper, NOW)
    adopted = [*USERS, {"name": "erin.lee", "servers": {"": {"ready": True, "state": {"job_id": "40"}}}}]
    assert 40 not in run(sweeper, NOW + 300, users=lambda: adopted)
    assert 40 not in run(sweeper, NOW + 700), "seen orphaned again only from 700"
    assert 40 in run(sweeper, NOW + 1300)


def test_nothing_is_removed_when_the_hub_or_the_schedd_does_not_answer():
    sweeper = sweep.Sweeper(grace=0)

    def down():
        raise ConnectionRefusedError("hub restarting")

    assert run(sweeper, NOW, users=down) == []
    assert run(sweeper, NOW, ads=down) == []
    assert run(sweeper, NOW + 100) == [11, 40, 50, 60]


def test_a_view_without_job_ids_removes_nothing():
    """Without admin:server_state every session would look orphaned: the round is skipped instead."""
    sweeper = sweep.Sweeper(grace=0)
    no_state = [{"name": "alice", "servers": {"": {"ready": True, "pending": None}}}]
    no_servers = [{"name": "alice"}]
    assert run(sweeper, NOW + 100, users=lambda: no_state) == []
    assert run(sweeper, NOW + 100, users=lambda: no_servers) == []


def test_only_a_user_name_the_hub_could_own_reaches_sudo():
    job = sweep.Job(cluster=1, owner="root; rm", server="x/default", status=2, queued_at=0)
    try:
        sweep.remove_as_owner("/opt/condorlab/hub/bin/condorlab-job", job)
    except ValueError as exc:
        assert "not a user name" in str(exc)
    else:
        raise AssertionError("a bad owner name went to sudo")


def test_the_hub_s_pages_are_all_read(monkeypatch):
    pages = [
        {"items": [{"name": "alice"}], "_pagination": {"next": {"offset": 1}}},
        {"items": [{"name": "bob"}], "_pagination": {"next": None}},
    ]
    seen = []

    class Answer:
        def __init__(self, body):
            self.body = body

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, *args):
            import json

            return json.dumps(self.body).encode()

    def urlopen(request, timeout, context):
        seen.append(request.full_url)
        return Answer(pages[len(seen) - 1])

    monkeypatch.setattr(sweep.urllib.request, "urlopen", urlopen)
    users = sweep.hub_users("https://hub:8081/hub/api/", "tok", None)
    assert [u["name"] for u in users] == ["alice", "bob"]
    assert seen[1].endswith("offset=1&limit=200")
