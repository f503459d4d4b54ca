"""What the user reads about a session: why it waits, why it failed or ended, when it must end.

Pure functions of the session record, the job's state and the share's view:
the spawner decides, this module words it.
"""

from __future__ import annotations

import html
import time

from tornado import web

from . import contract
from .jobs import JobInfo, State
from .session import Session

# The negotiator's reasons not to match a job (LastRejMatchReason), as a user reads them.
REJECTIONS = {
    "submitter limit exceeded": "your group's quota is in use",
    "group quota": "your group's quota is in use",
    "insufficient priority": "users with a better priority go first",
    "no match found": "no free slot fits it",
}


class StartFailed(web.HTTPError, RuntimeError):
    """A start that failed for a reason the user should read: the API's answer and the progress page show it."""

    def __init__(self, message: str, reason: str = "failed"):
        super().__init__(500, "%s", message)
        self.message = message
        self.reason = reason  # for the start-failure metric: held, memory, exited, timeout, tunnel, identity

    def __str__(self) -> str:
        return self.message


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def hold_explained(info: JobInfo, session: Session | None) -> tuple[str, str]:
    """(reason, message) for a held session job, in the user's terms where HTCondor's code says what happened."""
    if info.over_memory:
        limit = (session.request_memory_mb if session else 0) or info.request_memory_mb
        return "memory", (
            f"your session used more than {limit} MB of memory, what its profile requests; "
            f"start a profile with more memory (HTCondor: {info.hold_reason})"
        )
    return "held", f"HTCondor held your session's job: {info.hold_reason}"


def start_failure(job_id: str, info: JobInfo, session: Session | None, server_key: str) -> StartFailed:
    """Why a session's job left the queue before its lab started."""
    if info.state == State.HELD:
        reason, message = hold_explained(info, session)
        if reason == "memory":
            return StartFailed(f"The session job {job_id} was held: {message}", "memory")
        return StartFailed(f"The session job {job_id} was held by HTCondor: {info.hold_reason}", "held")
    return StartFailed(
        f"The session job {job_id} ended before the lab started; see "
        f"~/{contract.staging_dir(server_key)}/session.err on the hub",
        "exited",
    )


def pending(job_id: str, info: JobInfo, session: Session | None, cache) -> str:
    """Where the session's job waits and why, from this cycle's queue and share views; '' once it runs."""
    job = f"Session job {job_id}"
    if info.state == State.HELD:
        return f"{job} is held by HTCondor: {info.hold_reason}"
    if info.state == State.UNKNOWN:
        return f"{job} is queued; the access point's queue does not answer just now"
    if info.state != State.IDLE:
        return ""
    ahead = cache.waiting_before(job_id)
    queue = "no session ahead of you" if ahead == 0 else f"{plural(ahead, 'session')} ahead of you"
    share = cache.share
    cpus = int(session.request_cpus if session else 1) or 1
    memory = int(session.request_memory_mb if session else 1) or 1
    if share.slots:
        message = (
            f"{job} is waiting for a slot in the interactive share: "
            f"{share.free_cpus} of {share.total_cpus} CPUs free, {queue}"
        )
        if not share.fits_ever(cpus, memory):
            largest = max(share.slots, key=lambda s: (s.total_cpus, s.total_memory_mb))
            message += (
                f". It cannot start there: it asks for {cpus} CPUs and {memory} MB, more than any node's share "
                f"({largest.total_cpus} CPUs, {largest.total_memory_mb} MB); choose a smaller profile"
            )
        elif not share.fits_now(cpus, memory):
            message += (
                f". No node has {plural(cpus, 'CPU')} and {memory} MB free in the share now; it starts when one has"
            )
    else:
        message = f"{job} is waiting for a slot: {queue}"
    reason = next((v for k, v in REJECTIONS.items() if k in info.rejected.lower()), info.rejected)
    if reason:
        message += f" (last negotiation: {reason})"
    return message


def job_ended(info: JobInfo, host: str, session: Session | None) -> tuple[str, str] | None:
    """(reason, message) for a session whose job left the running state; None for one that never started."""
    host = info.host or host
    if info.state == State.HELD:
        return hold_explained(info, session)
    if info.state == State.IDLE:
        return "evicted", f"HTCondor evicted your session's job from {host}"
    if session and session.started:
        return "ended", f"your lab on {host} exited (shut down from the lab, or it stopped)"
    return None


SEAL_FAILED = (
    "The session job could not be made a session (the hub's seal failed); try again, "
    "and tell the site's administrators if it fails again"
)

TUNNEL_FAILED = (
    "The hub could not open the channel to your lab (condorlab-tunnel failed); try again, "
    "and tell the site's administrators if it fails again"
)

TUNNEL_MOVED = "the channel to your lab could not be opened again on its port after the hub restarted"


def not_this_session(host: str, port: int, error: BaseException) -> str:
    return (
        f"The session's lab on {host} (through its tunnel's port {port}) could not prove it is this session ({error}); "
        "the job was removed, start a new session"
    )


def ended(reason: str, message: str) -> dict:
    """How a session ended when the user did not end it: kept across sessions, shown on the form."""
    return {"reason": reason, "message": message, "time": round(time.time())}


def idle_end(limit: int, group: str) -> dict:
    """The end of a session its group's idle culler stopped."""
    minutes = plural(limit // 60, "minute")
    return ended("idle", f"nobody used it for {minutes}, the idle limit of user group {group}; your files were kept")


def lab_lost(reason: str, host: str, port: int, since: float = 0.0) -> str:
    """What the user reads when the lab of a running session went away (policy.LabWatch's reasons)."""
    if reason == "lost":
        return f"another process answers on {host}:{port} in place of your lab; the session was ended"
    if reason == "lab-died":
        return f"your lab on {host} stopped (nothing answers in its place any more)"
    when = time.strftime("%H:%M:%S %Z", time.localtime(since))
    return f"the node running your session, {host}, stopped answering at {when}"


def session_ends_notice(user) -> str | None:
    """The hub's home page note on how long the user's running session may still run (its walltime)."""
    spawner = getattr(user, "spawner", None) if user is not None else None
    session = getattr(spawner, "session", None)
    ends = session.ends_at() if isinstance(session, Session) else 0
    if not ends:
        return None
    left = max(0, int(ends - time.time()))
    when = time.strftime("%H:%M %Z", time.localtime(ends))
    return (
        f"Your session on {html.escape(str(spawner.ip))} may run until {when} "
        f"({left // 3600} h {left % 3600 // 60:02d} min left, the walltime of profile "
        f"{html.escape(session.group)}/{html.escape(session.profile)}); "
        "it is then ended like a stop and your files are kept."
    )
