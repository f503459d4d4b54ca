"""The session records and the usage report."""

from __future__ import annotations

import base64
import csv
import io
import json

from condorlab import accounting, report

DAY = 86400
ADS = [
    {
        "ClusterId": 1,
        "Owner": "alice",
        "AcctGroup": "group_physics",
        "RemoteWallClockTime": 3600.0,
        "RemoteUserCpu": 1800.0,
        "RemoteSysCpu": 0.0,
        "RequestCpus": 2,
        "EnteredCurrentStatus": DAY + 10,
    },
    {
        "ClusterId": 2,
        "Owner": "bob",
        "AcctGroup": "group_physics",
        "RemoteWallClockTime": 1800.0,
        "RemoteUserCpu": 60.0,
        "RemoteSysCpu": 30.0,
        "RequestCpus": 1,
        "EnteredCurrentStatus": DAY + 20,
    },
    {
        "ClusterId": 3,
        "Owner": "carol",
        "AcctGroup": "group_astro",
        "RemoteWallClockTime": 7200.0,
        "RemoteUserCpu": 3600.0,
        "RemoteSysCpu": 0.0,
        "RequestCpus": 1,
        "EnteredCurrentStatus": DAY + 30,
    },
]


class FakeSchedd:
    def __init__(self, ads):
        self.ads = ads
        self.lab_ads = []
        self.calls = []

    def history(self, constraint, projection, match):
        self.calls.append((constraint, projection, match))
        return self.lab_ads if "AuthTokenId" in constraint else self.ads


def test_usage_per_group_and_user():
    report = accounting.rows(*accounting.summarise(ADS))
    assert [(r["level"], r["group"], r["user"]) for r in report] == [
        ("group", "group_astro", ""),
        ("user", "group_astro", "carol"),
        ("group", "group_physics", ""),
        ("user", "group_physics", "alice"),
        ("user", "group_physics", "bob"),
    ]
    physics = report[2]
    assert physics["sessions"] == 2 and physics["users"] == 2
    assert physics["wall_hours"] == 1.5
    assert physics["cpu_hours"] == 0.525
    assert physics["core_hours"] == 2.5


def test_the_query_asks_for_the_period_s_sessions_only():
    schedd = FakeSchedd(ADS)
    accounting.query_history(DAY, 2 * DAY, schedd)
    constraint, projection, match = schedd.calls[0]
    assert (
        constraint == f"CondorlabSession =?= true && EnteredCurrentStatus >= {DAY} && EnteredCurrentStatus < {2 * DAY}"
    )
    assert "RemoteWallClockTime" in projection and "AcctGroup" in projection and match == -1


def records_of(tmp_path, ads) -> str:
    """A session records file in which the hub recorded these jobs' starts."""
    path = tmp_path / "sessions.jsonl"
    recorder = accounting.SessionRecorder(str(path))
    for ad in ads:
        recorder.record("start", user=ad["Owner"], job=str(ad["ClusterId"]), request_cpus=ad["RequestCpus"])
        recorder.record("stop", user=ad["Owner"], job=str(ad["ClusterId"]))
    return str(path)


def test_csv_and_table_output(capsys, tmp_path):
    records = ["--records", records_of(tmp_path, ADS)]
    assert (
        report.main(["--since", "1970-01-02", "--until", "1970-01-03", "--format", "csv", *records], FakeSchedd(ADS))
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "level,group,user,sessions,users,wall_hours,cpu_hours,core_hours,lab_jobs,lab_core_hours"
    assert "group,group_astro,,1,1,2.0,1.0,2.0,0,0.0" in lines
    assert report.main(["--since", "1970-01-02", "--until", "1970-01-03", *records], FakeSchedd(ADS)) == 0
    table = capsys.readouterr().out
    assert "condorlab sessions, and batch jobs from labs, finished 1970-01-02 00:00 - 1970-01-03 00:00 UTC" in table
    assert "group_physics" in table and "  alice" in table


def test_an_empty_period_says_so(capsys):
    assert report.main(["--since", "2026-01-01"], FakeSchedd([])) == 0
    assert "(no session ended in this period)" in capsys.readouterr().out


def test_a_schedd_failure_is_reported(capsys):
    class Broken:
        def history(self, **_):
            raise RuntimeError("Failed to connect to schedd")

    assert report.main([], Broken()) == 1
    assert "cannot read HTCondor's history: Failed to connect" in capsys.readouterr().err


def test_bad_dates_are_refused(capsys):
    import pytest

    with pytest.raises(SystemExit):
        report.main(["--since", "last tuesday"], FakeSchedd([]))
    assert "is not a date" in capsys.readouterr().err


def test_session_records_are_json_lines_private_to_the_hub(tmp_path):
    path = tmp_path / "accounting" / "sessions.jsonl"
    recorder = accounting.SessionRecorder(str(path))
    recorder.record("start", user="alice", job="12")
    recorder.record("stop", user="alice", job="12")
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["event"] for e in events] == ["start", "stop"]
    assert events[0]["user"] == "alice" and events[0]["time"] <= events[1]["time"]
    assert path.stat().st_mode & 0o777 == 0o640


def test_only_recorded_sessions_with_possible_values_are_counted(capsys, tmp_path):
    """A user's edits to a job (or a batch job marked as a session) do not change the report."""
    forged = [
        # a batch job its owner marked as a session: the hub never recorded it
        {**ADS[1], "ClusterId": 7, "RemoteWallClockTime": 99999.0},
        # a recorded session whose wall time was edited to a negative value
        {**ADS[0], "ClusterId": 8, "RemoteWallClockTime": -360.0},
        # a recorded session longer than its life in the queue
        {**ADS[0], "ClusterId": 9, "QDate": DAY, "EnteredCurrentStatus": DAY + 100, "RemoteWallClockTime": 5000.0},
        # a recorded session whose CPUs were raised after the hub recorded 1
        {**ADS[2], "ClusterId": 10, "RequestCpus": 64},
    ]
    recorded = records_of(tmp_path, [ADS[0], ADS[2], forged[1], forged[2], {**forged[3], "RequestCpus": 1}])
    args = ["--since", "1970-01-02", "--until", "1970-01-03", "--format", "csv", "--records", recorded]
    assert report.main(args, FakeSchedd([ADS[0], ADS[2], *forged])) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert "group,group_physics,,1,1,1.0,0.5,2.0,0,0.0" in lines
    # carol's two sessions of 2 h each: core hours from the recorded 1 CPU, not the edited 64
    assert "group,group_astro,,2,1,4.0,2.0,4.0,0,0.0" in lines
    assert "job 7 of bob is marked as a session but the hub never recorded it" in captured.err
    assert "job 8 of alice has impossible usage (wall -360.0 s" in captured.err
    assert "job 9 of alice has impossible usage (wall 5000.0 s" in captured.err


def test_daily_core_hours_split_at_midnight_and_sessions_on_their_last_day():
    late = {**ADS[0], "ClusterId": 4, "RemoteWallClockTime": 7200.0, "EnteredCurrentStatus": 2 * DAY + 3600}
    usage = accounting.daily([*ADS, late], DAY, 3 * DAY)
    assert usage.days == ["1970-01-02", "1970-01-03"]
    # The late 2-CPU session of 2 h ran 1 h on each day; jobs 1 (2 CPUs) and 2 (1 CPU) ran 10 and 20 s
    # of theirs within the period.
    assert usage.core_hours["group_physics"] == [round((10 * 2 + 20) / 3600 + 2, 3), 2.0]
    assert usage.sessions == {"group_astro": [1, 0], "group_physics": [2, 1]}
    assert usage.core_hours["group_astro"] == [round(30 / 3600, 3), 0.0], "only the hours within the period"


def test_the_plot_has_one_series_per_group_as_png_and_svg():
    usage = accounting.daily(ADS, 0, 3 * DAY)

    fig = report.figure(usage, 0, 3 * DAY)
    hours_ax = fig.axes[0]
    assert [line.get_label() for line in hours_ax.get_lines()] == ["group_astro", "group_physics"]
    png = report.plot(usage, 0, 3 * DAY, "png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    import matplotlib.image

    assert matplotlib.image.imread(io.BytesIO(png)).shape[:2] == (650, 1000)
    svg = report.plot(usage, 0, 3 * DAY, "svg").decode()
    assert svg.count('id="series-') == 2 and 'id="series-group_astro"' in svg


def test_the_html_page_is_self_contained_with_the_table_and_the_plot(tmp_path):
    records = ["--records", records_of(tmp_path, ADS)]
    out = tmp_path / "report.html"
    period = ["--since", "1970-01-02", "--until", "1970-01-03"]
    assert report.main([*period, "--format", "html", "--output", str(out), *records], FakeSchedd(ADS)) == 0
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and 'id="series-group_physics"' in page
    assert "<td>group_astro</td>" in page and "<td>alice</td>" in page
    assert "src=" not in page and "href=" not in page.replace('xlink:href="#', ""), "no external resources"
    png = tmp_path / "report.png"
    assert report.main([*period, "--format", "png", "--output", str(png), *records], FakeSchedd(ADS)) == 0
    assert png.read_bytes().startswith(b"\x89PNG")


def test_an_empty_period_still_makes_a_page(tmp_path):
    out = tmp_path / "empty.html"
    assert report.main(["--since", "2026-01-01", "--format", "html", "--output", str(out)], FakeSchedd([])) == 0
    assert "No session ended in this period." in out.read_text()


def test_a_session_lost_with_its_node_counts_the_time_the_hub_saw_it_run(capsys, tmp_path):
    """HTCondor's wall time of such a job holds its shadow's wait for the dead node too (on the demo: wall
    204 s for 61 s in the queue, dropped as impossible); the hub's own records count it."""
    lost = {**ADS[0], "ClusterId": 11, "QDate": DAY, "EnteredCurrentStatus": DAY + 61, "RemoteWallClockTime": 204.0}
    path = tmp_path / "sessions.jsonl"
    lines = [
        {"event": "start", "user": "alice", "job": "11", "time": DAY + 5, "request_cpus": 2},
        {"event": "stop", "user": "alice", "job": "11", "time": DAY + 60, "reason": "node-lost", "last_seen": DAY + 41},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    counted = accounting.checked_ads([lost], accounting.recorded_sessions(str(path)))
    assert capsys.readouterr().err == "", "not skipped"
    assert [ad["RemoteWallClockTime"] for ad in counted] == [36.0], "from its start to the last answer"
    groups, _ = accounting.summarise(counted)
    assert groups["group_physics"].sessions == 1 and round(groups["group_physics"].core_hours * 3600) == 72


def pool_token(jti: str) -> str:
    """An IDTOKEN's shape: header.claims.signature (base64url, unpadded)."""
    claims = json.dumps({"iss": "condorlab.test", "jti": jti, "sub": "alice@condorlab.test"}).encode()
    return "eyJhbGciOiJIUzI1NiJ9." + base64.urlsafe_b64encode(claims).decode().rstrip("=") + ".c2ln"


def test_batch_jobs_submitted_from_labs_count_under_the_group_the_access_point_gave_them(capsys, tmp_path):
    records = records_of(tmp_path, ADS)
    accounting.record_token(records, "alice", "1", pool_token("a1b2"))
    accounting.record_token(records, "carol", "3", pool_token("c3d4"))
    accounting.record_token(records, "bob", "2", "not a token")  # nothing to note
    assert "a1b2" in open(records).read() and pool_token("a1b2") not in open(records).read(), "the id, never the token"
    lab_job = {**ADS[0], "ClusterId": 10, "RemoteUserCpu": 0.0, "EnteredCurrentStatus": DAY + 40, "QDate": DAY - 7200}
    schedd = FakeSchedd(ADS)
    schedd.lab_ads = [
        {**lab_job, "AuthTokenId": "a1b2", "RemoteWallClockTime": 1800.0, "RequestCpus": 4},
        {**lab_job, "ClusterId": 11, "AuthTokenId": "a1b2", "RemoteWallClockTime": 600.0, "RequestCpus": 1},
        # A token of alice's lab used by nobody else's job counts; one on the AP, or carol's id on bob's job, not.
        {**lab_job, "ClusterId": 12, "AuthTokenId": "ap-token", "RemoteWallClockTime": 600.0},
        {**lab_job, "ClusterId": 13, "Owner": "bob", "AuthTokenId": "c3d4", "RemoteWallClockTime": 600.0},
        {**lab_job, "ClusterId": 14, "AuthTokenId": "a1b2", "RemoteWallClockTime": -5.0},
    ]
    csv_args = ["--since", "1970-01-02", "--until", "1970-01-03", "--format", "csv", "--records", records]
    assert report.main(csv_args, schedd) == 0
    out = capsys.readouterr()
    rows = {(r["level"], r["group"], r["user"]): r for r in csv.DictReader(io.StringIO(out.out))}
    alice = rows[("user", "group_physics", "alice")]
    assert (alice["sessions"], alice["lab_jobs"], alice["lab_core_hours"]) == ("1", "2", "2.167")
    assert rows[("group", "group_physics", "")]["lab_jobs"] == "2"
    assert rows[("user", "group_physics", "bob")]["lab_jobs"] == "0"
    assert "job 14 of alice has impossible usage" in out.err
    lab_query = next(c for c in schedd.calls if "AuthTokenId" in c[0])
    assert lab_query[0].startswith("CondorlabSession =!= true && AuthTokenId =!= undefined")
    assert "AuthTokenId" in lab_query[1]
