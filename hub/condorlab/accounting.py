"""Session accounting: the hub's session records, and the usage report from HTCondor's history.

HTCondor's history is the source of truth for usage: a session is an ordinary
job, so its wall time, CPU time and accounting group are there. The hub adds a
record per session start and stop (who, which group and profile, which job,
where, what was asked for), one JSON object per line, for questions the
history cannot answer alone (which profile, when the lab was ready), and the
id of each pool token it gives a lab (a "token" record): HTCondor writes the id
of the token a job was submitted with into the job (AuthTokenId), so the
report counts the batch jobs submitted from labs too, under the group the
access point gave them.

`condorlab-accounting` (report.py) reports usage per group and per user for a period, from
the history through the htcondor bindings, as a table or as CSV. It counts only
jobs the hub recorded as sessions (a user can mark a batch job as a session, not
make the hub record it), and it skips impossible values (negative or longer than
the job's life in the queue), each with a warning: the access point protects
these attributes, so such a value means a site without that protection. A
session the hub ended because its node was lost counts the time the hub saw
its lab run (from its start to the last time it answered): HTCondor's wall
time for such a job also holds the time its shadow waited for the dead node.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from .contract import ATTRS

SESSION_RECORDS = "/var/lib/jupyterhub/accounting/sessions.jsonl"
PROJECTION = [
    "ClusterId",
    "Owner",
    "AcctGroup",
    "AccountingGroup",
    ATTRS.group,
    ATTRS.profile,
    "RemoteWallClockTime",
    "RemoteUserCpu",
    "RemoteSysCpu",
    "RequestCpus",
    "JobStatus",
    "EnteredCurrentStatus",
    "QDate",
]


class SessionRecorder:
    """Appends session events to a JSON-lines file (0640, the hub's)."""

    def __init__(self, path: str = SESSION_RECORDS):
        self.path = path

    def record(self, event: str, **facts) -> dict:
        entry = {"event": event, "time": round(time.time(), 3), **facts}
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o750, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        with os.fdopen(fd, "a") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
        return entry


def record_session(path: str, event: str, user: str, server: str, job: str, session, facts: dict, log=None) -> None:
    """Append a start or stop record of a session (session.Session); a failure is logged (to log), never fatal."""
    fields = session.accounting() if session is not None else {}
    try:
        SessionRecorder(path).record(event, user=user, server=server, job=job, **fields, **facts)
    except OSError as exc:
        (log or logging.getLogger("condorlab.accounting")).warning(
            "Could not record the session %s of %s: %s", event, user, exc
        )


@dataclass
class Usage:
    sessions: int = 0
    wall_hours: float = 0.0
    cpu_hours: float = 0.0
    core_hours: float = 0.0
    users: set = field(default_factory=set)
    lab_jobs: int = 0  # batch jobs submitted from labs (with a lab's pool token)
    lab_core_hours: float = 0.0

    def add_lab_job(self, ad: dict) -> None:
        self.lab_jobs += 1
        self.lab_core_hours += float(ad.get("RemoteWallClockTime") or 0) * int(ad.get("RequestCpus") or 1) / 3600
        self.users.add(ad.get("Owner", "?"))

    def add(self, ad: dict) -> None:
        wall = float(ad.get("RemoteWallClockTime") or 0)
        cpu = float(ad.get("RemoteUserCpu") or 0) + float(ad.get("RemoteSysCpu") or 0)
        self.sessions += 1
        self.wall_hours += wall / 3600
        self.cpu_hours += cpu / 3600
        self.core_hours += wall * int(ad.get("RequestCpus") or 1) / 3600
        self.users.add(ad.get("Owner", "?"))


def _entries(path: str) -> Iterator[dict]:
    """The records in the hub's JSON-lines file (SessionRecorder), skipping lines that are not one; none
    if there is no file yet."""
    try:
        with open(path) as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    yield entry
    except FileNotFoundError:
        return


def recorded_sessions(path: str) -> dict[tuple[str, int], dict]:
    """The session starts the hub recorded: (user, cluster) -> the start record, with the session's
    stop record under "ended" where the hub recorded one."""
    sessions, stops = {}, {}
    for entry in _entries(path):
        job = str(entry.get("job") or "").split(".")[0]
        if job.isdigit() and entry.get("event") in ("start", "stop"):
            into = sessions if entry["event"] == "start" else stops
            into[(str(entry.get("user")), int(job))] = entry
    for key, stop in stops.items():
        if key in sessions:
            sessions[key] = {**sessions[key], "ended": stop}
    return sessions


def observed_wall(record: dict) -> float | None:
    """The seconds the hub saw a session's lab run when it ended the session as node-lost, else None."""
    ended = record.get("ended") or {}
    began, last_seen = _number(record.get("time")), _number(ended.get("last_seen"))
    if ended.get("reason") != "node-lost" or began is None or last_seen is None:
        return None
    return max(0.0, last_seen - began)


def token_id(token: str) -> str:
    """The id (jti) of an HTCondor IDTOKEN, as the schedd writes it into a job's AuthTokenId; '' if none.
    The token's signature is not checked: the hub only notes the id of a token it was just given."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error, AttributeError):
        return ""
    jti = claims.get("jti") if isinstance(claims, dict) else None
    return jti if isinstance(jti, str) else ""


def record_token(path: str, user: str, job: str, token: str, log=None) -> None:
    """Note the id of a pool token given to a lab (never the token); a failure is logged, never fatal."""
    identifier = token_id(token)
    if not identifier:
        return
    try:
        SessionRecorder(path).record("token", user=user, job=job, token_id=identifier)
    except OSError as exc:
        (log or logging.getLogger("condorlab.accounting")).warning("Could not record a token of %s: %s", user, exc)


def recorded_tokens(path: str) -> dict[str, str]:
    """The ids of the pool tokens the hub gave labs: token id -> its user."""
    return {
        str(entry["token_id"]): str(entry.get("user"))
        for entry in _entries(path)
        if entry.get("event") == "token" and entry.get("token_id")
    }


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def checked_ads(ads: Iterable[dict], recorded: dict[tuple[str, int], dict], warn=None) -> list[dict]:
    """The ads of recorded sessions with possible values; the rest is skipped with a warning.

    Core hours use the CPUs the hub recorded for the session, not the job's
    (editable) request.
    """
    warn = warn or (lambda message: print(f"condorlab-accounting: warning: {message}", file=sys.stderr))
    kept = []
    for ad in ads:
        owner, cluster = str(ad.get("Owner")), ad.get("ClusterId")
        record = recorded.get((owner, cluster)) if isinstance(cluster, int) else None
        if record is None:
            warn(f"job {cluster} of {owner} is marked as a session but the hub never recorded it; not counted")
            continue
        observed = observed_wall(record)
        if observed is not None:  # its node was lost: the time the hub saw it run
            ad = {**ad, "RemoteWallClockTime": observed}
        if impossible(ad, warn):
            continue
        kept.append({**ad, "RequestCpus": int(record.get("request_cpus") or 1)})
    return kept


def impossible(ad: dict, warn) -> bool:
    """Whether a job's usage cannot be (negative, or longer than its life in the queue); warns if so."""
    wall = _number(ad.get("RemoteWallClockTime") or 0)
    cpu = [_number(ad.get(name) or 0) for name in ("RemoteUserCpu", "RemoteSysCpu")]
    life = (_number(ad.get("EnteredCurrentStatus")) or 0) - (_number(ad.get("QDate")) or 0)
    if wall is None or None in cpu or wall < 0 or min(cpu) < 0 or (life > 0 and wall > life + 60):
        warn(
            f"job {ad.get('ClusterId')} of {ad.get('Owner')} has impossible usage (wall "
            f"{ad.get('RemoteWallClockTime')!r} s, CPU {ad.get('RemoteUserCpu')!r}/{ad.get('RemoteSysCpu')!r} s, "
            f"{life:.0f} s in the queue); not counted"
        )
        return True
    return False


def checked_lab_jobs(ads: Iterable[dict], tokens: dict[str, str], warn=None) -> list[dict]:
    """The batch jobs submitted with a pool token the hub gave its owner's lab, with possible values.

    A job submitted with a copy of someone else's lab token runs as that token's owner (whose token it is),
    so it counts for them, as HTCondor accounts it."""
    warn = warn or (lambda message: print(f"condorlab-accounting: warning: {message}", file=sys.stderr))
    return [
        ad for ad in ads if tokens.get(str(ad.get("AuthTokenId"))) == str(ad.get("Owner")) and not impossible(ad, warn)
    ]


def group_of(ad: dict) -> str:
    return str(ad.get("AcctGroup") or ad.get(ATTRS.group) or "<none>")


def summarise(
    ads: Iterable[dict], lab_jobs: Iterable[dict] = ()
) -> tuple[dict[str, Usage], dict[tuple[str, str], Usage]]:
    """Usage per accounting group, and per (group, user): sessions, and batch jobs from labs."""
    groups: dict[str, Usage] = {}
    users: dict[tuple[str, str], Usage] = {}
    for ad in ads:
        group = group_of(ad)
        groups.setdefault(group, Usage()).add(ad)
        users.setdefault((group, str(ad.get("Owner", "?"))), Usage()).add(ad)
    for ad in lab_jobs:
        group = group_of(ad)
        groups.setdefault(group, Usage()).add_lab_job(ad)
        users.setdefault((group, str(ad.get("Owner", "?"))), Usage()).add_lab_job(ad)
    return groups, users


@dataclass
class Daily:
    """Per user group and UTC day of a period: core hours (a session's split at midnight) and sessions ended."""

    days: list[str]
    core_hours: dict[str, list[float]]
    sessions: dict[str, list[int]]


def daily(ads: Iterable[dict], since: float, until: float) -> Daily:
    first = datetime.fromtimestamp(since, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    count = max(1, int((until - first.timestamp() + 86399) // 86400))
    days = [(first + timedelta(days=n)).strftime("%Y-%m-%d") for n in range(count)]
    starts = [first.timestamp() + n * 86400 for n in range(count)]
    core: dict[str, list[float]] = {}
    sessions: dict[str, list[int]] = {}
    for ad in ads:
        group = group_of(ad)
        core.setdefault(group, [0.0] * count)
        sessions.setdefault(group, [0] * count)
        end = float(ad.get("EnteredCurrentStatus") or 0)
        begin = end - float(ad.get("RemoteWallClockTime") or 0)
        cpus = int(ad.get("RequestCpus") or 1)
        for n, day_start in enumerate(starts):
            overlap = min(end, day_start + 86400, until) - max(begin, day_start, since)
            if overlap > 0:
                core[group][n] += overlap * cpus / 3600
            if day_start <= end < day_start + 86400:
                sessions[group][n] += 1
    return Daily(days, {g: [round(h, 3) for h in v] for g, v in sorted(core.items())}, dict(sorted(sessions.items())))


def history_constraint(since: float, until: float) -> str:
    return f"{ATTRS.session} =?= true && EnteredCurrentStatus >= {int(since)} && EnteredCurrentStatus < {int(until)}"


def lab_history_constraint(since: float, until: float) -> str:
    return (
        f"{ATTRS.session} =!= true && AuthTokenId =!= undefined && "
        f"EnteredCurrentStatus >= {int(since)} && EnteredCurrentStatus < {int(until)}"
    )


def query_history(since: float, until: float, schedd=None, labs: bool = False) -> list[dict]:
    """Finished session jobs of the period from the schedd's history (htcondor bindings); with labs,
    the finished jobs submitted with a token that are no sessions (checked_lab_jobs picks the labs')."""
    if schedd is None:
        import htcondor

        schedd = htcondor.Schedd()
    projection = [*PROJECTION, "AuthTokenId"] if labs else PROJECTION
    constraint = lab_history_constraint(since, until) if labs else history_constraint(since, until)
    ads = schedd.history(constraint=constraint, projection=projection, match=-1)
    return [{key: ad.get(key) for key in projection} for ad in ads]


def rows(groups: dict[str, Usage], users: dict[tuple[str, str], Usage]) -> list[dict]:
    result = []
    for group in sorted(groups):
        usage = groups[group]
        result.append(_row("group", group, "", usage))
        for (user_group, user), user_usage in sorted(users.items()):
            if user_group == group:
                result.append(_row("user", group, user, user_usage))
    return result


def _row(level: str, group: str, user: str, usage: Usage) -> dict:
    return {
        "level": level,
        "group": group,
        "user": user,
        "sessions": usage.sessions,
        "users": len(usage.users),
        "wall_hours": round(usage.wall_hours, 3),
        "cpu_hours": round(usage.cpu_hours, 3),
        "core_hours": round(usage.core_hours, 3),
        "lab_jobs": usage.lab_jobs,
        "lab_core_hours": round(usage.lab_core_hours, 3),
    }


COLUMNS = [
    "level",
    "group",
    "user",
    "sessions",
    "users",
    "wall_hours",
    "cpu_hours",
    "core_hours",
    "lab_jobs",
    "lab_core_hours",
]
# How the table and the HTML page head the columns.
HEADINGS = {
    "level": "level",
    "group": "group",
    "user": "user",
    "sessions": "sessions",
    "users": "users",
    "wall_hours": "wall h",
    "cpu_hours": "CPU h",
    "core_hours": "core h",
    "lab_jobs": "jobs from labs",
    "lab_core_hours": "their core h",
}


def period_bounds(since: float, until: float) -> tuple[str, str]:
    """The period's start and end as the reports print them (UTC, to the minute)."""
    return tuple(datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M") for t in (since, until))


def render_csv(report: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(report)
    return out.getvalue()


def render_table(report: list[dict], since: float, until: float) -> str:
    start, end = period_bounds(since, until)
    numbers = ("sessions", "wall_hours", "cpu_hours", "core_hours", "lab_jobs", "lab_core_hours")
    header = ["group / user", *(HEADINGS[c] for c in numbers)]
    lines = []
    for row in report:
        name = row["group"] if row["level"] == "group" else f"  {row['user']}"
        lines.append([name, *(str(row[c]) if isinstance(row[c], int) else f"{row[c]:.2f}" for c in numbers)])
    widths = [max(len(header[i]), *(len(line[i]) for line in lines)) if lines else len(header[i]) for i in range(7)]
    out = [f"condorlab sessions, and batch jobs from labs, finished {start} - {end} UTC (from HTCondor's history)"]
    out.append("  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header)))
    for line in lines:
        out.append("  ".join(v.ljust(widths[0]) if i == 0 else v.rjust(widths[i]) for i, v in enumerate(line)))
    if not lines:
        out.append("(no session ended in this period)")
    return "\n".join(out) + "\n"
