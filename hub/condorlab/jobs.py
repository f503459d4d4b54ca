"""One schedd query and one collector query per poll cycle for all condorlab sessions, shared by every spawner.

The schedd query gives every session job's state (and, for a waiting one, when
it was queued and why the negotiator last passed it over); the collector query
gives the interactive share's partitionable slots (what each node has free).
From these two the pending page says where a session waits and why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from . import metrics
from .contract import ATTRS, MAX_AVOID_NODES, MEMORY_HOLD_SUBCODE, SHARE_SLOT_ATTR, is_node_name

PROJECTION = [
    "ClusterId",
    "ProcId",
    "JobStatus",
    "RemoteHost",
    "HoldReason",
    "HoldReasonCode",
    "HoldReasonSubCode",
    "Owner",
    "NumJobStarts",
    "TransferringOutput",
    "RequestCpus",
    "RequestMemory",
    "QDate",
    "LastRejMatchReason",
    ATTRS.server,
    ATTRS.group,
]
SHARE_PROJECTION = ["Machine", "Cpus", "Memory", "TotalSlotCpus", "TotalSlotMemory", "LastHeardFrom"]


class State(Enum):
    IDLE = "idle"
    RUNNING = "running"
    HELD = "held"
    SUSPENDED = "suspended"  # the startd paused it; the lab is alive and resumes
    GONE = "gone"  # not in the queue (finished, removed, never there)
    UNKNOWN = "unknown"  # the schedd did not answer: the job may well be alive


# Seconds after which a session job still waiting gets one reschedule of its own.
# The seal's reschedule can be lost: the schedd publishes the released job at
# most once a second (SCHEDD_MIN_INTERVAL), and a negotiation cycle already
# under way, which still reads the submitter ad without it, clears the
# schedd's pending reschedule when it contacts the schedd; the job would then
# wait for the interactive negotiator's next cycle.
SECOND_LOOK_AFTER = 3.0

# HTCondor's HoldReasonCode for a job that went over its memory (or another
# resource) limit: JobOutOfResources; and for a job the startd's policy held
# (the share's memory policy gives it MEMORY_HOLD_SUBCODE).
OUT_OF_RESOURCES = 34
STARTD_HELD = 21

# HTCondor JobStatus codes.
_STATES = {
    1: State.IDLE,
    2: State.RUNNING,
    3: State.GONE,
    4: State.GONE,
    5: State.HELD,
    6: State.RUNNING,  # transferring output
    7: State.SUSPENDED,
}


@dataclass(frozen=True)
class JobInfo:
    state: State
    host: str = ""
    hold_reason: str = ""
    hold_code: int = 0  # HoldReasonCode
    hold_subcode: int = 0  # HoldReasonSubCode
    starts: int = 0  # how often the job has started (more than once: evicted and rerun)
    transferring: bool = False  # the job is sending its files back
    request_cpus: int | None = None
    request_memory_mb: int | None = None
    queued_at: int = 0  # QDate
    rejected: str = ""  # the negotiator's last reason not to match it (LastRejMatchReason)
    group: str = ""  # the user group (CondorlabGroup)

    @property
    def over_memory(self) -> bool:
        """Held for using more memory than it requested (by HTCondor's cgroup limit or the share's policy)."""
        if self.hold_code == STARTD_HELD:
            return self.hold_subcode == MEMORY_HOLD_SUBCODE
        return self.hold_code == OUT_OF_RESOURCES and "memory" in self.hold_reason.lower()


@dataclass(frozen=True)
class ShareSlot:
    """One execute node's interactive share (its partitionable slot): what is free, of how much."""

    node: str
    cpus: int
    memory_mb: int
    total_cpus: int
    total_memory_mb: int
    heard_at: int = 0  # LastHeardFrom: when the collector last heard from the node


@dataclass(frozen=True)
class ShareView:
    """The interactive share as the collector last saw it; known False when it could not be read."""

    slots: tuple[ShareSlot, ...] = ()
    known: bool = False

    @property
    def total_cpus(self) -> int:
        return sum(s.total_cpus for s in self.slots)

    @property
    def free_cpus(self) -> int:
        return sum(s.cpus for s in self.slots)

    def fits_now(self, cpus: int, memory_mb: int) -> bool:
        return any(s.cpus >= cpus and s.memory_mb >= memory_mb for s in self.slots)

    def fits_ever(self, cpus: int, memory_mb: int) -> bool:
        return any(s.total_cpus >= cpus and s.total_memory_mb >= memory_mb for s in self.slots)


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def host_of(remote_host: str) -> str:
    """'slot1_1@wn1.example.org' -> 'wn1.example.org'.

    RemoteHost is written by the schedd when it claims the slot; the access
    point protects it (PROTECTED_JOB_ATTRS), so the job's owner cannot point
    the hub elsewhere. The hub still checks the session's own certificate on
    that host before it routes anybody there.
    """
    return remote_host.rsplit("@", 1)[-1] if remote_host else ""


def plain(ad, key: str) -> str | int | float | bool | None:
    """An attribute of a ClassAd as a plain Python value, taken while the ad lives.

    An attribute that is an expression (a job without request_memory has
    RequestMemory = ifthenelse(...)) is evaluated; what is not a string,
    number or boolean becomes None. The bindings' expression objects point into
    their ad and must never outlive it: reading one after the ad is freed
    crashes the process.
    """
    import classad

    value = ad.get(key)
    if isinstance(value, classad.ExprTree):
        try:
            value = ad.eval(key)
        except Exception:  # an expression that does not evaluate here
            return None
    return value if isinstance(value, str | int | float | bool) else None


def _default_share_query() -> list[dict[str, Any]]:
    import htcondor

    ads = htcondor.Collector().query(
        htcondor.AdTypes.Startd,
        constraint=f"{SHARE_SLOT_ATTR} =?= true && PartitionableSlot =?= true",
        projection=SHARE_PROJECTION,
    )
    return [{k: plain(ad, k) for k in SHARE_PROJECTION} for ad in ads]


def _default_query() -> list[dict[str, Any]]:
    import htcondor  # the distribution's bindings; imported lazily for tests

    schedd = htcondor.Schedd()
    ads = schedd.query(constraint=f"{ATTRS.sealed} =?= true", projection=PROJECTION)
    return [{k: plain(ad, k) for k in PROJECTION} for ad in ads]


def schedd_address() -> str:
    """This access point's schedd's address file as the schedd wrote it (its address, HTCondor's version
    and platform): a lab's tools use it as their own local schedd's, so that they reach this schedd
    whatever the names are on their node. Empty if there is none."""
    try:
        import htcondor

        with open(htcondor.param.get("SCHEDD_ADDRESS_FILE", "")) as handle:
            text = handle.read(4096)
    except (ImportError, OSError):
        return ""
    return text if text.startswith("<") else ""


def _default_reschedule() -> None:
    import htcondor

    htcondor.Schedd().reschedule()


class JobStatusCache:
    """Queries the schedd at most once per ``max_age`` seconds for all session jobs.

    A failed query does not forget the jobs: every job is reported UNKNOWN until the
    schedd answers again, so a schedd hiccup never reads as "the session ended".

    While a session job has waited longer than ``reschedule_after`` seconds, the
    cache asks the schedd for a reschedule at most that often: the schedd sends
    its submitter ads to the collector again and asks for a negotiation. A
    central manager that restarted has lost those ads, and the schedd alone
    sends them only every SCHEDD_INTERVAL (5 minutes by default). Each session
    job still waiting SECOND_LOOK_AFTER seconds after it was queued also gets
    one reschedule of its own, in case the seal's was lost.

    Nodes on which a session was lost (node_lost) are left out of the share's
    view and named by avoided_nodes() for new submissions, until the collector
    hears from the node again or ``avoid_for`` seconds have passed: the
    collector keeps a dead node's ads for a while, and a session sent there
    would wait for nothing.
    """

    def __init__(
        self,
        query: Callable[[], list[dict[str, Any]]] | None = None,
        max_age: float = 2.0,
        timeout: float = 30.0,
        share_query: Callable[[], list[dict[str, Any]]] | None = None,
        reschedule: Callable[[], None] | None = None,
        reschedule_after: float = 30.0,
        avoid_for: float = 900.0,
    ):
        self._query = query or _default_query
        self._share_query = share_query or (_default_share_query if query is None else (lambda: []))
        self._reschedule = reschedule or (_default_reschedule if query is None else (lambda: None))
        self.reschedule_after = reschedule_after
        self._rescheduled = float("-inf")
        self._looked_again: set[str] = set()  # waiting jobs that had their second look
        self._rescheduling: asyncio.Future | None = None
        self.reschedules = 0
        self.avoid_for = avoid_for
        self._lost: dict[str, float] = {}  # node -> time.time() it was lost
        self._keeper: asyncio.Task | None = None
        self.share = ShareView()
        self.max_age = max_age
        self.timeout = timeout
        self._jobs: dict[str, JobInfo] = {}
        self._fetched = float("-inf")
        self._ok = False
        self._lock = asyncio.Lock()
        self.queries = 0
        self.log = logging.getLogger("condorlab.jobs")

    async def refresh(self, force: bool = False) -> None:
        async with self._lock:
            if not force and time.monotonic() - self._fetched < self.max_age:
                return
            self.queries += 1
            began = time.monotonic()
            try:
                ads = await asyncio.wait_for(
                    asyncio.get_running_loop().run_in_executor(None, self._query), timeout=self.timeout
                )
            except Exception as exc:  # the bindings raise plain exceptions; a hung schedd times out
                self.log.warning("schedd query failed, keeping sessions as unknown: %s", exc)
                self._ok = False
                metrics.SCHEDD_QUERY_FAILURES.inc()
            else:
                metrics.SCHEDD_QUERY_SECONDS.observe(time.monotonic() - began)
                self._jobs = {
                    f"{ad['ClusterId']}.{ad.get('ProcId', 0)}": JobInfo(
                        state=_STATES.get(ad.get("JobStatus"), State.UNKNOWN),
                        host=host_of(str(ad.get("RemoteHost") or "")),
                        hold_reason=str(ad.get("HoldReason") or ""),
                        hold_code=int(ad.get("HoldReasonCode") or 0),
                        hold_subcode=int(ad.get("HoldReasonSubCode") or 0),
                        starts=int(ad.get("NumJobStarts") or 0),
                        transferring=bool(ad.get("TransferringOutput")),
                        request_cpus=_int_or_none(ad.get("RequestCpus")),
                        request_memory_mb=_int_or_none(ad.get("RequestMemory")),
                        queued_at=int(ad.get("QDate") or 0),
                        rejected=str(ad.get("LastRejMatchReason") or ""),
                        group=str(ad.get(ATTRS.group) or ""),
                    )
                    for ad in ads
                }
                self._ok = True
                self._reschedule_waiting()
            try:
                slots = await asyncio.wait_for(
                    asyncio.get_running_loop().run_in_executor(None, self._share_query), timeout=self.timeout
                )
            except Exception as exc:  # the collector may be restarting; the share is then "not known"
                self.log.info("collector query for the interactive share failed: %s", exc)
                self.share = ShareView()
            else:
                seen = [
                    ShareSlot(
                        node=str(ad.get("Machine") or "?"),
                        cpus=int(ad.get("Cpus") or 0),
                        memory_mb=int(ad.get("Memory") or 0),
                        total_cpus=int(ad.get("TotalSlotCpus") or ad.get("Cpus") or 0),
                        total_memory_mb=int(ad.get("TotalSlotMemory") or ad.get("Memory") or 0),
                        heard_at=int(ad.get("LastHeardFrom") or 0),
                    )
                    for ad in slots
                ]
                for slot in seen:
                    if slot.node in self._lost and slot.heard_at > self._lost[slot.node]:
                        self.log.info("Node %s answers the collector again; new sessions may go there", slot.node)
                        del self._lost[slot.node]
                avoided = {node for node, _ in self.avoided_nodes()}
                self.share = ShareView(tuple(s for s in seen if s.node not in avoided), known=True)
            self._fetched = time.monotonic()

    def _reschedule_waiting(self) -> None:
        """Ask for a reschedule in the background (never under the cache's lock) when a session waits long,
        or waits still at its second look."""
        now = time.time()
        waiting = {job: i for job, i in self._jobs.items() if i.state == State.IDLE and i.starts == 0}
        self._looked_again &= waiting.keys()
        second_look = {job for job, i in waiting.items() if now - i.queued_at > SECOND_LOOK_AFTER} - self._looked_again
        periodic = any(now - i.queued_at > self.reschedule_after for i in waiting.values()) and (
            time.monotonic() - self._rescheduled >= self.reschedule_after
        )
        if not (second_look or periodic):
            return
        self._looked_again |= second_look
        if periodic:
            self._rescheduled = time.monotonic()
        self.reschedules += 1
        self._rescheduling = asyncio.ensure_future(self._reschedule_now())

    async def _reschedule_now(self) -> None:
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(None, self._reschedule), timeout=self.timeout
            )
        except Exception as exc:  # the schedd's answer changes nothing here; the next period asks again
            self.log.info("reschedule for waiting sessions failed: %s", exc)

    def node_lost(self, node: str, when: float | None = None) -> None:
        """A session's node stopped answering: new sessions avoid it until it is heard from again."""
        if is_node_name(node):
            self._lost[node] = when or time.time()

    def avoided_nodes(self) -> list[list]:
        """[node, since] for the nodes new sessions avoid: lost within avoid_for seconds, not heard from since.

        The newest MAX_AVOID_NODES; a submitted session's requirements let it go
        there again once the collector has heard from the node after ``since``.
        """
        now = time.time()
        for node, when in list(self._lost.items()):
            if now - when > self.avoid_for:
                del self._lost[node]
        newest = sorted(self._lost.items(), key=lambda item: item[1], reverse=True)[:MAX_AVOID_NODES]
        return [[node, int(when)] for node, when in sorted(newest)]

    def keep_fresh(self, every: float) -> None:
        """Refresh at least every ``every`` seconds in the background, sessions or not.

        The metrics (sessions, the share, whether the schedd answers) then stay
        current on an idle hub too. Started once, from the running event loop.
        """
        if self._keeper is not None and not self._keeper.done():
            return
        try:
            self._keeper = asyncio.get_running_loop().create_task(self._keep(every))
        except RuntimeError:  # no event loop yet: the next call starts it
            self._keeper = None

    async def _keep(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            await self.refresh()

    @property
    def schedd_up(self) -> bool:
        """Whether the last schedd query answered."""
        return self._ok

    def counts(self) -> dict[tuple[str, str], int]:
        """Session jobs by (state, user group) in the last view of the queue (none while the schedd is down)."""
        counts: dict[tuple[str, str], int] = {}
        if self._ok:
            for info in self._jobs.values():
                key = (info.state.value, info.group or "-")
                counts[key] = counts.get(key, 0) + 1
        return counts

    def waiting_before(self, job_id: str) -> int:
        """How many session jobs have been waiting longer than this one (its place in the queue)."""
        if "." not in job_id:
            job_id = f"{job_id}.0"
        mine = self._jobs.get(job_id)
        if mine is None:
            return 0
        return sum(
            1
            for key, info in self._jobs.items()
            if key != job_id and info.state == State.IDLE and (info.queued_at, key) < (mine.queued_at, job_id)
        )

    async def get(self, job_id: str, force: bool = False) -> JobInfo:
        await self.refresh(force=force)
        if not self._ok:
            return JobInfo(State.UNKNOWN)
        if "." not in job_id:
            job_id = f"{job_id}.0"
        return self._jobs.get(job_id, JobInfo(State.GONE))


async def wait_gone(cache: JobStatusCache, job_id: str, grace: float, transfer_timeout: float) -> tuple[bool, JobInfo]:
    """Wait up to grace seconds for the job to leave the queue (up to transfer_timeout while it sends files back).

    Returns (whether it left, its last state); a hold or an eviction ends the wait at once.
    """
    loop = asyncio.get_running_loop()
    deadline, hard_deadline = loop.time() + grace, loop.time() + max(grace, transfer_timeout)
    while True:
        info = await cache.get(job_id, force=True)
        if info.state in (State.GONE, State.HELD) or (info.state == State.IDLE and info.starts > 0):
            return info.state == State.GONE, info
        now = loop.time()
        if now > hard_deadline or (now > deadline and not info.transferring):
            return False, info
        await asyncio.sleep(1)


shared_cache = JobStatusCache()
