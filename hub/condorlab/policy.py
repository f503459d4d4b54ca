"""When the hub ends a running session on its own: walltime, a changed job, idleness, a lost lab.

Each rule is a function of the session record, the job's state and the clock;
LabWatch keeps the little memory the lost-lab rule needs (since when the lab
has not answered). The spawner applies what these return.
"""

from __future__ import annotations

import datetime
import ssl
import time
from dataclasses import dataclass

from . import contract
from .identity import IdentityError
from .jobs import JobInfo
from .session import Session


def over_walltime(session: Session | None, now: float | None = None) -> bool:
    """Whether the running session has reached its profile's walltime."""
    ends = session.ends_at() if session else 0
    return bool(ends) and (time.time() if now is None else now) >= ends


def tampered(session: Session | None, info: JobInfo) -> str:
    """Why the job no longer asks for what the hub submitted (condor_qedit by its owner), or ''."""
    if session is None:
        return ""
    wanted = {"RequestCpus": session.request_cpus, "RequestMemory": session.request_memory_mb}
    found = {"RequestCpus": info.request_cpus, "RequestMemory": info.request_memory_mb}
    changed = [f"{k} {found[k]} (submitted {v})" for k, v in wanted.items() if v and found[k] not in (None, v)]
    return ", ".join(changed)


def idle_for(last_activity: datetime.datetime | None) -> float:
    """Seconds since the session's last activity as JupyterHub saw it (0 when not known)."""
    if last_activity is None:
        return 0.0
    if last_activity.tzinfo is None:
        last_activity = last_activity.replace(tzinfo=datetime.UTC)
    return (datetime.datetime.now(datetime.UTC) - last_activity).total_seconds()


def idle_limit(user_groups: list[dict], session: Session | None) -> int:
    """The idle timeout of the session's user group (0: none)."""
    if session is None:
        return 0
    group = next((g for g in user_groups if g.get("name") == session.group), None)
    return contract.idle_timeout(group) if group else 0


@dataclass
class LabWatch:
    """Whether a running session's lab is still there, from the outcomes of the hub's health checks.

    Another certificate answering means the lab is gone at once. Nothing
    listening is "lab died" once it has lasted exit_grace seconds (the lab
    exits a moment before its job leaves the queue, and the queue says why).
    No answer at all (a crashed node, a cut network) is a blip until it has
    lasted lost_after seconds: then the node is taken as lost.
    """

    lost_after: float = 45
    exit_grace: float = 8
    unreachable_since: float = 0.0
    refused_since: float = 0.0

    def reset(self) -> None:
        self.unreachable_since = self.refused_since = 0.0

    def judge(self, error: BaseException | None, now: float | None = None) -> str | None:
        """The reason the lab is gone ("lost", "lab-died", "node-lost"), or None while it counts as there."""
        now = time.time() if now is None else now
        if error is None:
            self.reset()
            return None
        if isinstance(error, IdentityError):
            return "lost"
        if isinstance(error, ConnectionRefusedError):
            self.refused_since = self.refused_since or now
            return "lab-died" if now - self.refused_since >= self.exit_grace else None
        if isinstance(error, (OSError, TimeoutError, ssl.SSLError)):
            self.unreachable_since = self.unreachable_since or now
            return "node-lost" if now - self.unreachable_since >= self.lost_after else None
        raise error
