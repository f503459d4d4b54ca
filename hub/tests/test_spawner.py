from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from types import SimpleNamespace

import pytest
from condorlab import handlers, identity
from condorlab.helperclient import HelperClient
from condorlab.jobs import JobInfo, ShareSlot, ShareView, State
from condorlab.lablink import LabLink, TunnelTransport
from condorlab.messages import StartFailed
from condorlab.options import apply_user_options, options_from_form
from condorlab.session import Session
from condorlab.spawner import CondorlabSpawner
from jupyterhub.apihandlers import default_handlers
from prometheus_client import REGISTRY


class FakeCache:
    """Job states in the order the spawner will see them."""

    def __init__(self, *infos: JobInfo, share: ShareView | None = None, ahead: int = 0):
        self.infos = list(infos)
        self.forced = []
        self.share = share or ShareView()
        self.ahead = ahead
        self.lost = {}

    def node_lost(self, node, when=None):
        self.lost[node] = when

    def avoided_nodes(self):
        return [[node, int(when or 1)] for node, when in sorted(self.lost.items())]

    async def refresh(self, force=False):
        pass

    def waiting_before(self, job_id):
        return self.ahead

    async def get(self, job_id, force=False):
        self.forced.append(force)
        return self.infos.pop(0) if len(self.infos) > 1 else self.infos[0]


USER_GROUPS = [
    {
        "name": "physics",
        "unix_groups": ["physics"],
        "accounting_group": "group_physics",
        "profiles": [
            {"name": "small", "label": "small", "cpus": 1, "memory_mb": 512, "gpus": 0, "walltime": 3600},
            {"name": "big", "label": "big", "cpus": 4, "memory_mb": 4096, "gpus": 0, "walltime": 7200},
        ],
    },
    {
        "name": "astro",
        "unix_groups": ["astro"],
        "accounting_group": "group_astro",
        "profiles": [{"name": "quick", "label": "quick", "cpus": 1, "memory_mb": 256, "gpus": 0, "walltime": 1800}],
    },
]


@pytest.fixture
def spawner(tmp_path, fake_helper):
    s = CondorlabSpawner(
        user=SimpleNamespace(name="alice", url="/user/alice/", settings={}),
        user_groups=USER_GROUPS,
        accounting_records=str(tmp_path / "sessions.jsonl"),
    )
    s.unix_groups = lambda: {"alice", "physics"}
    s.startup_poll_interval = 0
    s.helper = fake_helper
    s.calls = fake_helper.calls
    s.get_env = lambda: {"JUPYTERHUB_API_TOKEN": "tok", "JUPYTERHUB_USER": "alice"}
    return s


def session_of(**fields) -> Session:
    """A checked session of physics/small with these fields changed."""
    base = {"group": "physics", "profile": "small", "accounting_group": "group_physics"}
    return Session(**{"request_cpus": 1, "request_memory_mb": 512, **base, **fields})


def run(coro):
    return asyncio.run(coro)


async def start_reporting_port(spawner, port: int):
    """start(), with the job's port report arriving as soon as the job is submitted."""
    submit = spawner.submit_batch_script

    async def submit_then_report():
        job = await submit()
        spawner.port = port
        return job

    spawner.submit_batch_script = submit_then_report
    return await spawner.start()


def test_batchspawner_handler_is_not_reachable_and_ours_is():
    handlers.install()
    handlers.install()
    paths = [h[0] for h in default_handlers]
    assert r"/api/batchspawner" not in paths
    assert paths.count(handlers.PORT_REPORT_PATH) == 1


def test_the_helper_runs_through_sudo_as_the_user_only(spawner):
    helper = HelperClient("alice", spawner.job_helper, spawner.job_seal)
    assert helper.seal_cmd("default", "12") == ["sudo", "-n", "--", spawner.job_seal, "alice", "default", "12"]
    assert helper.helper_cmd("remove", "12") == [
        "sudo",
        "-n",
        "-u",
        "alice",
        "--",
        "/opt/condorlab/hub/bin/condorlab-job",
        "remove",
        "12",
    ]
    for command in (HelperClient("-x alice", "h", "s").helper_cmd, HelperClient("-x alice", "h", "s").seal_cmd):
        with pytest.raises(ValueError, match="not a Unix user name"):
            command("remove", "12")
    helper = HelperClient("erin.lee", spawner.job_helper, spawner.job_seal)
    assert helper.helper_cmd("clean", "default")[3:] == ["erin.lee", "--", spawner.job_helper, "clean", "default"]


def test_submit_sends_only_checked_values(spawner):
    assert run(spawner.submit_batch_script()) == "12"
    (args, request), *_ = spawner.calls
    assert args == ("submit",)
    assert set(request) == {"server", "env", "group", "profile", "request_cpus", "request_memory_mb"}
    assert request["server"] == "default" and request["env"]["JUPYTERHUB_API_TOKEN"] == "tok"


def test_a_submission_avoids_the_nodes_where_sessions_were_lost(spawner):
    spawner.status_cache = FakeCache(JobInfo(State.GONE))
    spawner.status_cache.node_lost("wn2", 1764500000.5)
    run(spawner.submit_batch_script())
    (_, request), *_ = spawner.calls
    assert request["avoid_nodes"] == [["wn2", 1764500000]]


def test_named_servers_do_not_share_the_default_staging(spawner, monkeypatch):
    assert spawner.server_key == "default"
    monkeypatch.setattr(CondorlabSpawner, "name", property(lambda self: "default"))
    assert spawner.server_key == "named-default"


LAB_SOCKET = "/var/lib/condor/execute/dir_42/.condorlab/lab.sock"


@pytest.mark.parametrize(
    ("job_id", "port", "reported", "error"),
    [
        ("12", 0, LAB_SOCKET, ""),
        ("12", 0, "/etc/../root/x.sock", "socket path"),
        ("12", 0, "lab.sock", "socket path"),
        ("12", 0, 50005, "socket path"),
        ("", 0, LAB_SOCKET, "not waiting for its lab"),
        ("12", 30001, LAB_SOCKET, "not waiting for its lab"),
    ],
)
def test_accept_report(spawner, job_id, port, reported, error):
    spawner.job_id = job_id
    spawner.port = port
    message = spawner.accept_report(reported)
    if error:
        assert error in message and spawner.lab_socket == ""
    else:
        assert message == "" and spawner.lab_socket == reported


def test_a_start_waits_for_the_job_and_its_lab_then_opens_the_tunnel_and_routes_to_its_port(spawner):
    spawner.status_cache = FakeCache(JobInfo(State.IDLE), JobInfo(State.RUNNING, host="wn1"))
    socket_path = LAB_SOCKET

    async def go():
        task = asyncio.ensure_future(spawner.start())
        await asyncio.sleep(0.05)
        assert not task.done(), "no socket reported yet"
        assert spawner.accept_report("/etc/../root/x.sock").startswith("socket path")
        assert spawner.accept_report(socket_path) == ""
        assert spawner.accept_report(socket_path) == "this server is not waiting for its lab"
        return await asyncio.wait_for(task, 5)

    assert run(go()) == ("localhost", 30007), "JupyterHub and the proxy reach the tunnel's port by its name"
    assert spawner.status_cache.forced[0] is True, "the first look after submitting bypasses the cache"
    assert ("tunnel", "open", "default", "12", socket_path) in spawner.helper.commands
    assert spawner.lab.transport.endpoint(spawner.ip, spawner.port) == ("127.0.0.1", 30007)
    run(spawner.clean_staging())
    run(spawner.clean_staging())
    closes = [args for args in spawner.helper.commands if args == ("tunnel", "close", "default")]
    assert len(closes) == 1, "the tunnel goes with the session, closed once"


def test_the_lab_s_report_wakes_the_start_at_once_and_the_next_look_at_the_job_is_fresh(spawner):
    """A start does not sleep out its poll interval once the lab has reported; the shared view may lag the job."""
    spawner.startup_poll_interval = 30
    spawner.status_cache = FakeCache(JobInfo(State.IDLE), JobInfo(State.RUNNING, host="wn1"))

    async def go():
        task = asyncio.ensure_future(spawner.start())
        await asyncio.sleep(0.05)
        began = time.monotonic()
        assert spawner.accept_report(LAB_SOCKET) == ""
        address = await asyncio.wait_for(task, 5)
        return address, time.monotonic() - began

    address, after = run(go())
    assert address == ("localhost", 30007)
    assert after < 1, f"the start went on {after:.2f} s after the report (its poll interval is 30 s)"
    assert spawner.status_cache.forced[:2] == [True, True], "the look after the report bypasses the cache"


def test_a_tunnel_that_cannot_open_fails_the_start_with_its_reason_and_removes_the_job(spawner):
    spawner.status_cache = FakeCache(JobInfo(State.RUNNING, host="wn1"))

    async def refuse(*args):
        raise RuntimeError("condorlab-tunnel open failed (2): no free tunnel port")

    spawner.helper.tunnel = refuse
    spawner.lab_socket = ""

    async def go():
        task = asyncio.ensure_future(spawner.start())
        await asyncio.sleep(0.05)
        spawner.accept_report(LAB_SOCKET)
        return await asyncio.wait_for(task, 5)

    with pytest.raises(StartFailed) as failed:
        run(go())
    assert failed.value.reason == "tunnel" and "channel to your lab" in str(failed.value)
    assert ("remove", "12") in spawner.helper.commands


def test_a_start_makes_the_user_a_member_of_the_session_s_group_only(spawner):
    synced = []
    spawner.user.sync_groups = synced.append
    spawner.status_cache = FakeCache(JobInfo(State.IDLE), JobInfo(State.RUNNING, host="wn1"))
    apply_user_options(spawner, {"profile": "physics/small"})
    run(start_reporting_port(spawner, 50003))
    assert synced == [["physics"]], "only the physics culler may end this session"


def metric(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0


def test_a_start_is_measured(spawner):
    spawner.status_cache = FakeCache(JobInfo(State.IDLE), JobInfo(State.RUNNING, host="wn1"))
    apply_user_options(spawner, {"profile": "physics/small"})
    starts = metric("condorlab_session_start_seconds_count", group="physics")
    waits = metric("condorlab_session_queue_wait_seconds_count", group="physics")
    run(start_reporting_port(spawner, 50003))
    assert metric("condorlab_session_start_seconds_count", group="physics") == starts + 1
    assert metric("condorlab_session_queue_wait_seconds_count", group="physics") == waits + 1
    ends = metric("condorlab_session_ends_total", reason="walltime", group="physics")
    spawner.record("stop", reason="walltime")
    assert metric("condorlab_session_ends_total", reason="walltime", group="physics") == ends + 1


@pytest.mark.parametrize(
    ("info", "message", "reason"),
    [
        (
            JobInfo(State.HELD, hold_reason="Error from slot1@wn1: out of memory"),
            "held by HTCondor: Error from",
            "held",
        ),
        (JobInfo(State.GONE), "ended before the lab started", "exited"),
    ],
)
def test_start_notices_a_job_that_dies_or_is_held(spawner, info, message, reason):
    spawner.status_cache = FakeCache(JobInfo(State.IDLE), info)
    failures = metric("condorlab_session_start_failures_total", reason=reason)
    with pytest.raises(RuntimeError, match=message):
        run(spawner.start())
    assert ("remove", "12") in [c[0] for c in spawner.calls]
    assert spawner.job_id == ""
    assert metric("condorlab_session_start_failures_total", reason=reason) == failures + 1


def test_poll_keeps_a_session_whose_state_is_unknown(spawner):
    spawner.job_id = "12"
    spawner.status_cache = FakeCache(JobInfo(State.UNKNOWN))
    assert run(spawner.poll()) is None
    assert spawner.job_id == "12"


def test_poll_removes_a_held_session(spawner):
    spawner.job_id = "12"
    spawner.status_cache = FakeCache(JobInfo(State.HELD, hold_reason="walltime"))
    assert run(spawner.poll()) == 1
    assert [c[0] for c in spawner.calls] == [("remove", "12"), ("clean", "default")]


def test_poll_ends_an_evicted_session_without_removing_its_job(spawner):
    spawner.job_id = "12"
    spawner.port = 50003
    spawner.status_cache = FakeCache(JobInfo(State.IDLE, starts=1))
    assert run(spawner.poll()) == 1
    assert spawner.calls == [], "the job reruns to bring the work directory back"


def test_stop_removes_a_session_that_does_not_shut_down(spawner):
    spawner.job_id = "12"
    spawner.status_cache = FakeCache(JobInfo(State.GONE))

    async def no_server():
        return False

    spawner.request_shutdown = no_server
    run(spawner.stop())
    assert [c[0] for c in spawner.calls] == [("remove", "12"), ("clean", "default")]


def test_stop_waits_while_files_come_back(spawner):
    spawner.job_id = "12"
    spawner.stop_grace = 0
    spawner.status_cache = FakeCache(
        JobInfo(State.RUNNING, transferring=True), JobInfo(State.RUNNING, transferring=True), JobInfo(State.GONE)
    )

    async def shut():
        return True

    spawner.request_shutdown = shut

    async def fast_sleep(_):
        return None

    original = asyncio.sleep
    asyncio.sleep = fast_sleep
    try:
        run(spawner.stop())
    finally:
        asyncio.sleep = original
    assert [c[0] for c in spawner.calls] == [("clean", "default")], "a session sending its files back is not removed"


def test_tls_files_travel_with_the_job_and_never_touch_the_hub_s_disk(spawner, ca_store):
    spawner.internal_certs_location = str(ca_store)
    spawner.internal_trust_bundles = {"notebooks-ca": str(ca_store / "notebooks-ca_trust.crt")}
    spawner.proxy_alt_names = ["DNS:hub.example.org"]
    spawner.user.settings = {"subdomain_host": "https://hub.example.org"}
    spawner.user.domain = "alice.hub.example.org"
    before = sorted(p.name for p in ca_store.rglob("*"))
    apply_user_options(spawner, {})  # JupyterHub applies the options before it asks for certificates
    paths = run(spawner.create_certs())
    moved = run(spawner.move_certs(paths))
    assert moved == {"keyfile": "session-tls.key", "certfile": "session-tls.crt", "cafile": "session-ca.crt"}
    assert sorted(p.name for p in ca_store.rglob("*")) == before, "no session key or certificate in the hub's store"
    assert spawner.session.cert_sha256 == identity.fingerprint(paths["certfile"])
    # the tunnel's end and the user's own domain; not the hub's public name, no node, no address
    assert spawner.lab.alt_names() == ["DNS:localhost", "DNS:alice.hub.example.org"]
    spawner.user.settings = {}
    assert spawner.lab.alt_names() == ["DNS:localhost", "DNS:hub.example.org"]
    run(spawner.submit_batch_script())
    (_, request), *_ = spawner.calls
    assert request["files"]["session-tls.key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert request["files"]["session-tls.crt"] == paths["certfile"]
    assert request["files"]["session-ca.crt"] == (ca_store / "notebooks-ca_trust.crt").read_text()
    assert spawner.tls_files is None, "the key is not kept in memory after the submission"


def test_a_job_the_seal_refuses_is_removed_and_the_start_fails(spawner):
    async def refused(server_key, cluster):
        spawner.calls.append((("seal", cluster), None))
        raise RuntimeError("condorlab-seal failed (2): it is not held as submitted")

    spawner.helper.seal = refused
    spawner.status_cache = FakeCache(JobInfo(State.IDLE))
    with pytest.raises(RuntimeError, match="could not be made a session"):
        run(spawner.start())
    assert [c[0][0] for c in spawner.calls] == ["submit", "seal", "remove", "clean"]
    assert not spawner.job_id


def test_the_form_offers_only_the_user_s_groups_profiles(spawner):
    spawner.status_cache = FakeCache(JobInfo(State.GONE))
    form = run(spawner.get_options_form())
    assert 'value="physics/small"' in form and 'value="physics/big"' in form
    assert "astro" not in form
    assert "starts now" not in form, "no share known: nothing said about it"


SHARE = ShareView((ShareSlot("wn1", 1, 512, 4, 2048), ShareSlot("wn2", 0, 0, 4, 2048)), known=True)


def test_the_form_says_which_profiles_could_start_now(spawner):
    spawner.status_cache = FakeCache(JobInfo(State.GONE), share=SHARE)
    form = run(spawner.get_options_form())
    assert "physics: small — starts now</option>" in form
    assert "physics: big — too large for the interactive share</option>" in form
    spawner.status_cache.share = ShareView((ShareSlot("wn1", 0, 0, 4, 2048),), known=True)
    assert "physics: small — waits: the interactive share is full</option>" in run(spawner.get_options_form())


def test_the_form_does_not_wait_for_a_schedd_that_does_not_answer(spawner):
    class HungCache(FakeCache):
        async def refresh(self, force=False):
            await asyncio.sleep(30)

    spawner.status_cache = HungCache(JobInfo(State.GONE), share=SHARE)
    spawner.form_status_timeout = 0.5
    began = time.monotonic()
    form = run(spawner.get_options_form())
    assert time.monotonic() - began < 2
    assert "physics: small</option>" in form and "starts now" not in form


def test_the_pending_message_names_the_share_the_place_and_the_reason(spawner):
    spawner.job_id = "12"
    spawner.session = session_of(request_cpus=1, request_memory_mb=512)
    full = ShareView((ShareSlot("wn1", 0, 0, 4, 2048), ShareSlot("wn2", 0, 100, 4, 2048)), known=True)
    spawner.status_cache = FakeCache(share=full, ahead=2)
    spawner.job_info = JobInfo(State.IDLE, rejected="no match found")
    assert spawner.pending_message() == (
        "Session job 12 is waiting for a slot in the interactive share: 0 of 8 CPUs free, 2 sessions ahead of you. "
        "No node has 1 CPU and 512 MB free in the share now; it starts when one has "
        "(last negotiation: no free slot fits it)"
    )
    spawner.session = session_of(request_cpus=8, request_memory_mb=512)
    spawner.status_cache = FakeCache(share=SHARE)
    spawner.job_info = JobInfo(State.IDLE, rejected="submitter limit exceeded")
    message = spawner.pending_message()
    assert "1 of 8 CPUs free, no session ahead of you" in message
    assert "more than any node's share (4 CPUs, 2048 MB); choose a smaller profile" in message
    assert message.endswith("(last negotiation: your group's quota is in use)")
    spawner.job_info = JobInfo(State.HELD, hold_reason="over quota")
    assert spawner.pending_message() == "Session job 12 is held by HTCondor: over quota"
    spawner.status_cache = FakeCache()
    spawner.job_info = JobInfo(State.IDLE)
    assert spawner.pending_message() == "Session job 12 is waiting for a slot: no session ahead of you"


def test_progress_reports_each_change_then_the_running_job(spawner):
    spawner.job_id = "12"
    spawner.session = session_of(request_cpus=1, request_memory_mb=512)
    spawner.status_cache = FakeCache(share=SHARE, ahead=1)
    spawner.job_info = JobInfo(State.IDLE)

    async def watch():
        seen = []
        async for event in spawner.progress():
            seen.append(event["message"])
            if len(seen) == 1:
                spawner.job_info = JobInfo(State.RUNNING, host="wn1")
        return seen

    seen = run(asyncio.wait_for(watch(), 5))
    assert seen[0].startswith("Session job 12 is waiting for a slot in the interactive share: 1 of 8 CPUs free")
    assert seen[-1] == "Session job 12 runs on wn1; the lab is starting"


def test_a_start_that_outlasts_the_timeout_fails_with_the_reason(spawner):
    spawner.start_timeout = 3
    spawner.startup_poll_interval = 0.2
    spawner.status_cache = FakeCache(JobInfo(State.IDLE), share=SHARE, ahead=3)
    with pytest.raises(RuntimeError) as failed:
        run(spawner.start())
    assert "did not start within 3 s. Session job 12 is waiting for a slot in the interactive share" in str(
        failed.value
    )
    assert "3 sessions ahead of you" in str(failed.value)
    assert [c[0][0] for c in spawner.calls] == ["submit", "seal", "remove", "clean"]


def test_the_start_timeout_counts_the_submission_too(spawner):
    """JupyterHub's timer starts before the submission: a slow schedd leaves less time to wait."""
    spawner.start_timeout = 4
    spawner.startup_poll_interval = 0.1
    spawner.status_cache = FakeCache(JobInfo(State.IDLE), share=SHARE)
    submit = spawner.helper.submit

    async def slow_submit(request):
        await asyncio.sleep(1.5)
        return await submit(request)

    spawner.helper.submit = slow_submit
    began = time.monotonic()
    with pytest.raises(RuntimeError, match="did not start within 4 s"):
        run(spawner.start())
    assert time.monotonic() - began < 3.0


def test_a_given_up_start_forgets_the_job(spawner):
    spawner.start_timeout = 3
    spawner.startup_poll_interval = 0.2
    spawner.status_cache = FakeCache(JobInfo(State.HELD, hold_reason="over memory"))
    with pytest.raises(RuntimeError, match="over memory"):
        run(spawner.start())
    assert spawner.job_id == "" and spawner.job_info.state == State.GONE
    assert spawner.pending_message() == ""


def test_form_data_becomes_options(spawner):
    """As JupyterHub's form page and /hub/spawn query call the spawner's hook."""
    assert spawner.run_options_from_form({"profile": ["physics/big"], "cpus": ["2"], "memory": [""]}) == {
        "profile": "physics/big",
        "cpus": "2",
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"profile": "astro/quick"}, "is not one of your groups' profiles (physics/small, physics/big)"),
        ({"profile": "physics/big", "cpus": 8}, "cpus 8 is outside profile physics/big's limit of 1 to 4"),
        ({"profile": "physics/small", "memory": "1GB"}, "memory 1024 MB is above profile physics/small's limit"),
        ({"profile": "physics/small", "cpus": "two"}, "cpus 'two' is not a whole number"),
        ({"accounting_group": "group_astro"}, "unknown start option(s) accounting_group"),
    ],
)
def test_requests_outside_the_groups_limits_are_refused(spawner, options, message):
    from tornado import web

    with pytest.raises(web.HTTPError) as refused:
        apply_user_options(spawner, options)
    assert refused.value.status_code == 400
    assert message in refused.value.log_message


def test_a_request_within_the_limits_is_taken(spawner):
    apply_user_options(spawner, {"profile": "physics/big", "cpus": "2", "memory": "1GB"})
    assert spawner.session == Session(
        group="physics",
        profile="big",
        accounting_group="group_physics",
        request_cpus=2,
        request_memory_mb=1024,
        request_gpus=0,
        walltime=7200,
        label="big",
    )
    apply_user_options(spawner, {})
    assert spawner.session.profile == "small", "no profile: the first of the user's groups"


HUGE = "x" * 2**20  # a 1 MB start option


def stored_options(spawner, options: dict):
    """Give the spawner a server row in a hub database holding options, as JupyterHub stores them before the check."""
    from jupyterhub import orm
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    engine = create_engine("sqlite://")
    orm.Base.metadata.create_all(engine)
    db = Session(engine)
    user = orm.User(name="alice")
    db.add(user)
    orm_spawner = orm.Spawner(user=user, name="", user_options=options)
    db.add(orm_spawner)
    db.commit()
    spawner.orm_spawner = orm_spawner
    spawner.user_options = options
    return db


def assert_short_refusal(refused, status=400):
    message = refused.value.log_message
    assert refused.value.status_code == status
    assert len(message) < 300, message
    assert "x" * 41 not in message, "at most a short prefix of a value is quoted"
    return message


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"profile": HUGE}, "profile 'xxxxxxxx"),
        ({"profile": "physics/" + HUGE}, "(1048584 characters) is longer than the 65 characters"),
        ({"cpus": HUGE}, "cpus 'xxx"),
        ({"memory": "1" * 10**5}, "memory '111"),
        ({"profile": ["physics/small"] * 10}, "profile must be text or a number, not a list"),
        ({f"k{n}": "x" for n in range(10**4)}, "10000 start options; a session takes at most 3"),
        (
            {HUGE: "1", "y" * 100: "2", "z" * 100: "3", "w": "4"},
            f"unknown start option(s) w, '{'x' * 20}'... (1048576 characters), '{'y' * 20}'... (100 characters) and 1 more",
        ),
    ],
)
def test_oversized_start_options_are_refused_briefly_and_not_kept(spawner, options, expected):
    from tornado import web

    db = stored_options(spawner, options)
    with pytest.raises(web.HTTPError) as refused:
        apply_user_options(spawner, options)
    message = assert_short_refusal(refused)
    assert message.startswith("Cannot start this session: ")
    assert expected in message
    db.expire_all()
    assert spawner.orm_spawner.user_options == {}, "a refused request is not kept as the server's defaults"
    assert spawner.user_options == {}
    assert spawner.session is None


def test_the_form_refuses_an_oversized_option_before_jupyterhub_stores_it(spawner):
    from tornado import web

    with pytest.raises(web.HTTPError) as refused:
        options_from_form({"profile": [HUGE], "cpus": ["2"]})
    assert "profile 'xxxx" in assert_short_refusal(refused)


def test_options_within_the_bounds_are_taken_and_kept(spawner):
    options = {"profile": "physics/big", "cpus": " 2 ", "memory": "1.5 GiB"}
    db = stored_options(spawner, options)
    apply_user_options(spawner, options)
    assert (spawner.session.request_cpus, spawner.session.request_memory_mb) == (2, 1536)
    db.expire_all()
    assert spawner.orm_spawner.user_options == options
    assert options_from_form({"profile": ["physics/small"], "memory": ["512 MB"]}) == {
        "profile": "physics/small",
        "memory": "512 MB",
    }


def test_starts_and_stops_are_recorded(spawner, tmp_path):
    spawner.status_cache = FakeCache(JobInfo(State.RUNNING, host="wn1"))
    run(start_reporting_port(spawner, 50001))
    spawner.status_cache = FakeCache(JobInfo(State.GONE))
    assert run(spawner.poll()) == 1
    events = [json.loads(line) for line in (tmp_path / "sessions.jsonl").read_text().splitlines()]
    assert [(e["event"], e["job"], e["host"], e["group"], e["profile"]) for e in events] == [
        ("start", "12", "wn1", "physics", "small"),
        ("stop", "12", "wn1", "physics", "small"),
    ]


def test_a_session_past_its_walltime_is_ended_like_a_stop(spawner, tmp_path):
    import time

    spawner.job_id = "12"
    spawner.port = 50001
    apply_user_options(spawner, {"profile": "physics/small"})
    spawner.session = dataclasses.replace(spawner.session, started=time.time() - 3601)
    spawner.status_cache = FakeCache(JobInfo(State.RUNNING, host="wn1"), JobInfo(State.GONE))
    shutdowns = []

    async def shutdown():
        shutdowns.append(True)
        return True

    spawner.request_shutdown = shutdown
    assert run(spawner.poll()) == 0
    assert shutdowns == [True], "the lab was asked to shut down, so its files come back"
    assert not [c for c in spawner.calls if c[0][0] == "remove"], "the job ended by itself"
    assert not spawner.job_id
    (record,) = [json.loads(line) for line in (tmp_path / "sessions.jsonl").read_text().splitlines()]
    assert (record["event"], record["reason"]) == ("stop", "walltime")


def test_a_session_within_its_walltime_keeps_running(spawner):
    import time

    spawner.job_id = "12"
    apply_user_options(spawner, {"profile": "physics/small"})
    spawner.session = dataclasses.replace(spawner.session, started=time.time() - 60)
    spawner.status_cache = FakeCache(JobInfo(State.RUNNING, host="wn1"))
    assert run(spawner.poll()) is None


def test_a_poll_during_a_walltime_stop_neither_removes_nor_records(spawner, tmp_path):
    import time

    spawner.job_id = "12"
    spawner.port = 50001
    apply_user_options(spawner, {"profile": "physics/small"})
    spawner.session = dataclasses.replace(spawner.session, started=time.time() - 3601)
    spawner.status_cache = FakeCache(JobInfo(State.RUNNING, host="wn1"), JobInfo(State.RUNNING, host="wn1"))
    gate = asyncio.Event()

    async def shutdown():
        await gate.wait()
        spawner.status_cache = FakeCache(JobInfo(State.GONE))
        return True

    spawner.request_shutdown = shutdown

    async def go():
        first = asyncio.create_task(spawner.poll())
        await asyncio.sleep(0)
        second = await spawner.poll()
        gate.set()
        return await first, second

    assert run(go()) == (0, None)
    assert not [c for c in spawner.calls if c[0][0] == "remove"]
    assert len((tmp_path / "sessions.jsonl").read_text().splitlines()) == 1
    assert run(spawner.poll()) == 1, "afterwards the session is gone"
    assert len((tmp_path / "sessions.jsonl").read_text().splitlines()) == 1, "and no stray stop record"


# ---- faults: a lost node, a dead lab, a session over its memory ----------


def running_session(spawner, tmp_path=None):
    spawner.job_id = "12"
    spawner.port = 50001
    apply_user_options(spawner, {"profile": "physics/small"})
    spawner.session = dataclasses.replace(spawner.session, started=time.time() - 60)
    spawner.status_cache = FakeCache(JobInfo(State.RUNNING, host="wn2"))
    spawner.lab.watch.exit_grace = 0


def test_a_short_blip_keeps_the_session_and_a_lost_node_ends_it(spawner, tmp_path):
    running_session(spawner)
    spawner.lab.watch.lost_after = 45
    answers = []

    async def check(host, port, pinned=""):
        if answers.pop(0) == "timeout":
            raise TimeoutError("no answer")

    spawner.lab.check = check
    clock = [1000.0]
    original = time.time
    time.time = lambda: clock[0]
    try:
        answers[:] = ["timeout", "ok", "timeout"]
        assert run(spawner.poll()) is None, "first silence"
        clock[0] += 30
        assert run(spawner.poll()) is None and spawner.lab.watch.unreachable_since == 0, "it answered again: a blip"
        clock[0] += 10
        assert run(spawner.poll()) is None, "silent again, from now on"
        for _ in range(6):
            clock[0] += 10
            answers.append("timeout")
            result = run(spawner.poll())
            if result is not None:
                break
    finally:
        time.time = original
    assert result == 1 and clock[0] - 1040 >= 45, "ended once it was silent for lost_after"
    assert [c[0] for c in spawner.calls] == [("remove", "12"), ("clean", "default")]
    assert spawner.last_end["reason"] == "node-lost"
    assert spawner.last_end["message"].startswith("the node running your session, wn2, stopped answering at ")
    assert spawner.status_cache.lost == {"wn2": 1040.0}, "new sessions avoid the node"
    (stop,) = [json.loads(line) for line in (tmp_path / "sessions.jsonl").read_text().splitlines()]
    assert (stop["event"], stop["reason"], stop["host"]) == ("stop", "node-lost", "wn2")
    assert stop["last_seen"] == 1040.0, "when its lab last answered, for the accounting"


def test_a_lab_that_died_ends_the_session_at_once(spawner):
    running_session(spawner)

    async def refused(host, port, pinned=""):
        raise ConnectionRefusedError(111, "refused")

    spawner.lab.check = refused
    assert run(spawner.poll()) == 1
    assert spawner.last_end["reason"] == "lab-died"
    assert "your lab on wn2 stopped" in spawner.last_end["message"]


def test_a_lab_that_exits_is_explained_by_its_job_not_called_dead(spawner, monkeypatch):
    running_session(spawner)
    spawner.lab.watch.exit_grace = 8
    held = JobInfo(State.HELD, host="wn2", hold_code=21, hold_subcode=102, hold_reason="the session used 600 MB")
    spawner.status_cache = FakeCache(JobInfo(State.RUNNING, host="wn2"), held)

    async def refused(host, port, pinned=""):
        raise ConnectionRefusedError(111, "refused")

    spawner.lab.check = refused
    clock = [1000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    assert run(spawner.poll()) is None, "the job still runs: the queue may not know yet"
    clock[0] += 10
    assert run(spawner.poll()) == 1
    assert spawner.last_end["reason"] == "memory"


def test_a_lab_gone_while_its_job_runs_on_is_dead_after_the_grace(spawner, monkeypatch):
    running_session(spawner)
    spawner.lab.watch.exit_grace = 8

    async def refused(host, port, pinned=""):
        raise ConnectionRefusedError(111, "refused")

    spawner.lab.check = refused
    clock = [1000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    assert run(spawner.poll()) is None
    clock[0] += 10
    assert run(spawner.poll()) == 1
    assert spawner.last_end["reason"] == "lab-died"


@pytest.mark.parametrize(
    ("code", "subcode", "reason"),
    [
        (34, 0, "Error from slot2@wn2: Job has gone over cgroup memory limit of 512 megabytes. Peak usage: 600"),
        (21, 102, "the session used 600 MB of memory, more than the 512 MB it requested"),
    ],
    ids=["cgroup-limit", "share-policy"],
)
def test_a_session_over_its_memory_is_ended_with_that_reason(spawner, tmp_path, code, subcode, reason):
    running_session(spawner)
    spawner.status_cache = FakeCache(
        JobInfo(State.HELD, host="wn2", hold_code=code, hold_subcode=subcode, hold_reason=reason)
    )
    assert run(spawner.poll()) == 1
    assert spawner.last_end["reason"] == "memory"
    assert spawner.last_end["message"].startswith(
        "your session used more than 512 MB of memory, what its profile requests; start a profile with more memory"
    )
    (stop,) = [json.loads(line) for line in (tmp_path / "sessions.jsonl").read_text().splitlines()]
    assert stop["reason"] == "memory" and "512 MB" in stop["detail"]
    assert (stop["hold_code"], stop["hold_subcode"]) == (code, subcode)


def test_another_startd_hold_is_not_called_memory(spawner):
    running_session(spawner)
    spawner.status_cache = FakeCache(
        JobInfo(State.HELD, host="wn2", hold_code=21, hold_subcode=0, hold_reason="memory of the node is low")
    )
    run(spawner.poll())
    assert spawner.last_end["reason"] == "held"


def test_how_the_last_session_ended_outlives_it_and_is_shown_on_the_form(spawner):
    running_session(spawner)

    async def refused(host, port, pinned=""):
        raise ConnectionRefusedError(111, "refused")

    spawner.lab.check = refused
    run(spawner.poll())
    assert spawner.job_id == "" and spawner.session is None
    state = spawner.get_state()
    spawner.last_end = {}
    spawner.load_state(state)
    assert spawner.last_end["reason"] == "lab-died", "kept in the hub's database"
    spawner.status_cache = FakeCache(JobInfo(State.GONE), share=SHARE)
    form = run(spawner.get_options_form())
    assert 'id="condorlab-last-end"' in form and "your lab on wn2 stopped" in form
    spawner.status_cache = FakeCache(JobInfo(State.RUNNING, host="wn1"))
    del spawner.lab.check
    run(start_reporting_port(spawner, 50001))
    assert spawner.last_end == {}, "a new session: the notice has been read"


def stop_after(spawner, tmp_path, last_activity) -> dict:
    """Stop a running session of a group with a 10-minute idle timeout; return the stop record."""
    running_session(spawner)
    spawner.user_groups = [{**USER_GROUPS[0], "idle_timeout": 600}]
    spawner.orm_spawner = SimpleNamespace(last_activity=last_activity, user_options=None, server=None, name="")
    spawner.status_cache = FakeCache(JobInfo(State.GONE))

    async def shut():
        return True

    spawner.request_shutdown = shut
    run(spawner.stop())
    (stop,) = [json.loads(line) for line in (tmp_path / "sessions.jsonl").read_text().splitlines()]
    return stop


def test_a_stop_after_the_group_s_idle_timeout_is_recorded_as_idle(spawner, tmp_path):
    import datetime

    idle_since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=700)
    stop = stop_after(spawner, tmp_path, idle_since.replace(tzinfo=None))  # as JupyterHub's database keeps it
    assert stop["reason"] == "idle"
    assert spawner.last_end["message"].startswith("nobody used it for 10 minutes, the idle limit of user group physics")


def test_a_stop_of_a_used_session_is_a_plain_stop(spawner, tmp_path):
    import datetime

    stop = stop_after(spawner, tmp_path, datetime.datetime.now(datetime.UTC))
    assert stop["reason"] == "stopped" and spawner.last_end == {}


def test_the_home_page_says_how_long_the_session_may_run(spawner):
    from condorlab.messages import session_ends_notice

    assert session_ends_notice(None) is None
    assert session_ends_notice(SimpleNamespace(spawner=spawner)) is None, "no session"
    running_session(spawner)
    spawner.ip = "wn2"
    note = session_ends_notice(SimpleNamespace(spawner=spawner))
    assert note.startswith("Your session on wn2 may run until ")
    assert re.search(r"\(0 h 5[0-9] min left, the walltime of profile physics/small\)", note), note


def test_two_polls_at_once_end_a_lost_session_once(spawner, tmp_path):
    running_session(spawner)

    async def refused(host, port, pinned=""):
        await asyncio.sleep(0.05)
        raise ConnectionRefusedError(111, "refused")

    spawner.lab.check = refused

    async def both():
        return await asyncio.gather(spawner.poll(), spawner.poll())

    results = run(both())
    assert all(r is not None for r in results)
    assert [c[0] for c in spawner.calls].count(("remove", "12")) == 1, spawner.calls
    stops = [json.loads(line) for line in (tmp_path / "sessions.jsonl").read_text().splitlines()]
    assert [s["reason"] for s in stops] == ["lab-died"]


def test_without_internal_tls_the_shutdown_reaches_the_lab(spawner):
    """A hub without internal TLS still asks the lab to shut down (so its files come back), on the server's URL."""
    import http.server
    import threading

    posts = []

    class Lab(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            posts.append((self.path, self.headers["Authorization"]))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Lab)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_port
        target = SimpleNamespace(host=f"http://127.0.0.1:{port}", ip="127.0.0.1", port=port, base_url="/user/alice/")
        assert run(spawner.lab.shutdown(target, lambda: "tok", "")) is True
    finally:
        server.shutdown()
    assert posts == [("/user/alice/api/shutdown", "token tok")]


def test_after_a_hub_start_the_first_poll_sees_to_the_session_s_tunnel_on_its_port_once(spawner):
    state = {"condorlab_lab_socket": "/var/lib/condor/execute/dir_7/.condorlab/lab.sock"}
    spawner.load_state(state)
    spawner.lab = LabLink(spawner, TunnelTransport(), spawner.lab.watch)
    running_session(spawner)
    spawner.port = 30007
    checks = []

    async def answering(*args):
        checks.append(args)

    spawner.lab.check = answering
    assert run(spawner.poll()) is None and run(spawner.poll()) is None
    opens = [args for args in spawner.helper.commands if args[:2] == ("tunnel", "open")]
    assert opens == [("tunnel", "open", "default", "12", state["condorlab_lab_socket"], "30007")], "once"
    assert spawner.get_state()["condorlab_lab_socket"] == state["condorlab_lab_socket"]
    assert len(checks) == 2


def test_a_tunnel_that_comes_back_on_another_port_ends_the_session_with_the_reason(spawner):
    spawner.load_state({"condorlab_lab_socket": "/var/lib/condor/execute/dir_7/.condorlab/lab.sock"})
    spawner.lab = LabLink(spawner, TunnelTransport(), spawner.lab.watch)
    running_session(spawner)
    spawner.port = 30001  # the fake helper opens it on 30007
    assert run(spawner.poll()) == 1
    assert "could not be opened again" in spawner.last_end["message"]
    assert ("tunnel", "close", "default") in spawner.helper.commands


def test_a_lab_gets_a_pool_token_of_its_user_s_from_the_helper_while_its_job_is_there(spawner, monkeypatch):
    from condorlab import lablink

    clock = [1000.0]
    monkeypatch.setattr(lablink.time, "monotonic", lambda: clock[0])
    address = "<10.0.0.8:9618?addrs=10.0.0.8-9618&alias=hub&sock=schedd_1_2>\n$CondorVersion: 23.9.6 $\n"
    monkeypatch.setattr(lablink.jobs, "schedd_address", lambda: address)
    assert run(spawner.pool_token()) == (409, "this server has no session job")
    spawner.job_id = "12"
    answer, error = run(spawner.pool_token())
    assert error == "" and answer == {"token": "eyJ.token1.sig", "lifetime": 300, "schedd": address}
    assert spawner.helper.commands == [("token", "300")], "fetched as the user, by the job helper"
    clock[0] += 5
    assert run(spawner.pool_token())[0] == 429, "not in a loop"
    clock[0] += 10
    assert run(spawner.pool_token())[0]["token"] == "eyJ.token2.sig"
    spawner.lab_token_lifetime = 0
    assert run(spawner.pool_token())[0] == 404, "a site may give labs none"


def test_a_new_session_s_first_token_is_not_held_back_by_the_last_session_s(spawner, monkeypatch):
    from condorlab import lablink

    monkeypatch.setattr(lablink.jobs, "schedd_address", lambda: "<10.0.0.8:9618>\n")
    spawner.job_id = "12"
    assert run(spawner.pool_token())[0]["token"]
    spawner.job_id = ""
    spawner.status_cache = FakeCache(JobInfo(State.HELD, hold_reason="over memory"))
    with pytest.raises(RuntimeError):
        run(spawner.start())  # a new start (that fails here, once its job is submitted)
    spawner.job_id = "13"
    assert "token" in run(spawner.pool_token())[0], "at once, not 10 s after the last session's token"


def test_a_pool_token_the_helper_cannot_fetch_is_refused_without_its_reason(spawner):
    spawner.job_id = "12"

    async def failing(lifetime):
        raise RuntimeError("condorlab-job token failed (2): condor_token_fetch failed (1): AUTHENTICATE:1003")

    spawner.helper.token = failing
    assert run(spawner.pool_token()) == (503, "the access point could not issue a token now; ask again")
