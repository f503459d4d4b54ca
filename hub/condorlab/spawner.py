"""CondorlabSpawner: a user's JupyterLab as an ordinary HTCondor job.

The spawner orchestrates; each concern is a room of its own:

- session.py: the session record (what was asked and checked, what was learned);
- options.py, profiles.py: the options form and the start request, checked against the user's groups;
- helperclient.py: the job helper (submit, remove, clean as the user) and the seal (as root);
- jobs.py: the job's state from one shared schedd query per cycle;
- lablink.py: the lab's identity (pinned certificates), health check, shutdown and transport;
- policy.py: when the hub ends a session on its own (walltime, a changed job, idleness, a lost lab);
- messages.py: what the user reads; accounting.py and metrics.py: what the site counts.

It stays a batchspawner CondorSpawner (docs/architecture.md says which of its
methods are replaced and why); settings.configure() installs its API handlers.
"""

from __future__ import annotations

import asyncio
import time

from batchspawner import JobStatus
from traitlets import Any, Dict, Unicode, default

from . import contract, identity, messages, metrics, options, policy
from .accounting import record_session
from .helperclient import HelperClient
from .jobs import JobInfo, State, shared_cache, wait_gone
from .jobstate import JobStateHooks
from .lablink import LabHooks, LabLink, TunnelTransport
from .messages import StartFailed
from .session import LAST_END_KEY, SOCKET_KEY, STATE_KEY, Session
from .settings import SpawnerSettings


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait up to timeout seconds for event; whether it was set."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


class CondorlabSpawner(JobStateHooks, LabHooks, SpawnerSettings):
    """A session: the job, the lab, and their ends.

    Its settings and the options form's hooks are settings.SpawnerSettings'; the
    job-state hooks and the pending page jobstate.JobStateHooks'; the certificate
    hooks, the port report and the shutdown lablink.LabHooks'.
    """

    status_cache = Any(help="The shared job status cache (one schedd query per cycle).")
    session = Any(None)  # Session | None: the session the user asked for, checked
    last_end = Dict()  # how the user's last session ended, when the user did not end it
    stop_reason = Unicode("stopped")  # why the next stop happens, for the record
    ending = Any(False)  # set while poll() ends a session at its walltime
    tls_files = Any(None)  # the session's TLS files (name -> PEM) for the next submission
    lab_socket = Unicode("")  # the lab's socket on its node, as the lab reported it
    tunnel_kept = Any(False)  # this hub process has seen to the session's tunnel (LabHooks.ensure_tunnel)
    job_info = Any(JobInfo(State.GONE))  # the last state read from the cache
    reported = Any(None)  # asyncio.Event set when the starting lab reports where it listens (accept_report)
    token_fetched = Any(0.0)  # when the lab's last pool token was fetched (LabHooks.pool_token), monotonic

    @default("status_cache")
    def _status_cache_default(self):
        shared_cache.keep_fresh(self.queue_refresh_every)  # the hub's metrics stay current without sessions
        return shared_cache

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lab = LabLink(self, TunnelTransport(), policy.LabWatch(self.lost_after, self.lab_exit_grace))

    @property
    def helper(self) -> HelperClient:
        """The job helper and the seal, as this server's user (named at each use: an admin may rename users)."""
        return self.__dict__.get("_helper") or HelperClient(
            self.user.name, self.job_helper, self.job_seal, self.job_tunnel
        )

    @helper.setter
    def helper(self, client) -> None:
        self.__dict__["_helper"] = client

    @property
    def server_key(self) -> str:
        """Name of this server's staging directory: "default", or "named-<name>"."""
        return contract.server_key(self.name)

    # ---- the session asked for ------------------------------------------------

    def unix_groups(self) -> set[str]:
        return contract.unix_groups_of(self.user.name)

    def groups(self) -> list[dict]:
        return list(self.user_groups) or contract.load_user_groups(self.user_groups_file)

    # ---- state ----------------------------------------------------------------

    def get_state(self) -> dict:
        state = super().get_state()
        if self.session:
            state[STATE_KEY] = self.session.to_dict()
        if self.last_end:
            state[LAST_END_KEY] = self.last_end
        if self.lab_socket:
            state[SOCKET_KEY] = self.lab_socket
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.session = Session.from_dict(state.get(STATE_KEY))
        self.last_end = state.get(LAST_END_KEY) or {}
        self.lab_socket = state.get(SOCKET_KEY) or ""

    def clear_state(self) -> None:
        super().clear_state()  # the session goes; how it ended stays for the user to read
        self.session, self.lab_socket = None, ""
        self.job_info = JobInfo(State.GONE)
        self.lab.watch.reset()

    def started_at(self) -> float:
        return self.session.started if self.session else 0.0

    def record(self, event: str, **facts) -> None:
        group = self.session.group if self.session else "-"
        key, job = self.server_key, self.job_id
        record_session(self.accounting_records, event, self.user.name, key, job, self.session, facts, self.log)
        if event == "stop":
            metrics.SESSION_ENDS.labels(facts.get("reason") or "stopped", group).inc()

    def session_ended(self, reason: str, message: str) -> None:
        """A session ended without the user asking: record why, and keep the message for the user."""
        self.log.warning("Session job %s of %s ended (%s): %s", self.job_id, self.user.name, reason, message)
        if self.started_at():
            info = self.job_info
            held = {"hold_code": info.hold_code, "hold_subcode": info.hold_subcode} if info.state == State.HELD else {}
            # A lost node's lab last answered when the watch first found it silent (accounting.observed_wall).
            seen = {"last_seen": round(self.lab.watch.unreachable_since, 3)} if reason == "node-lost" else {}
            self.record("stop", host=info.host or self.ip, reason=reason, detail=message, **held, **seen)
        self.last_end = messages.ended(reason, message)

    # ---- the job ----------------------------------------------------------------

    async def submit_batch_script(self) -> str:
        key = self.server_key  # refuses a server name outside the contract
        if not self.session:
            options.apply_user_options(self, self.user_options)
        env = {k: str(v) for k, v in self.get_env().items()}
        avoid = self.status_cache.avoided_nodes()
        request = contract.submit_request(key, env, self.session.request(), self.tls_files, avoid)
        try:
            reply = await self.helper.submit(request)
        finally:
            self.tls_files = None
        self.job_id = str(reply["cluster"])
        try:  # submitted on hold: the seal makes it a session job and releases it
            await self.helper.seal(key, self.job_id)
        except (OSError, RuntimeError, ValueError) as exc:
            self.log.error("Could not seal session job %s of %s: %s", self.job_id, self.user.name, exc)
            await self._abandon()
            raise StartFailed(messages.SEAL_FAILED, "seal") from None
        s = self.session
        self.log.info("Session of %s (%s, %s/%s) is job %s", self.user.name, key, s.group, s.profile, self.job_id)
        return self.job_id

    async def cancel_batch_job(self) -> None:
        if self.job_id:
            self.log.info("Removing job %s of %s", self.job_id, self.user.name)
            await self.helper.remove(self.job_id)

    async def clean_staging(self) -> None:
        """Close the tunnel; delete the staged secrets (token file, key, certificate) once the job has left."""
        await self.close_tunnel()
        try:
            await self.helper.clean(self.server_key)
        except (OSError, RuntimeError, ValueError) as exc:
            self.log.warning("Could not delete the staged secrets of %s: %s", self._log_name, exc)

    async def _abandon(self) -> None:
        """Give up a session: remove the job, delete its staged secrets, forget it."""
        await self.cancel_batch_job()
        await self.clean_staging()
        self.clear_state()

    # ---- start --------------------------------------------------------------------

    async def start(self):
        began = time.monotonic()
        try:
            address = await self._start()
        except Exception as exc:
            metrics.SESSION_START_FAILURES.labels(exc.reason if isinstance(exc, StartFailed) else "error").inc()
            raise
        metrics.SESSION_START_SECONDS.labels(self.session.group).observe(time.monotonic() - began)
        return address

    async def _start(self):
        # Give up with the reason 15 s before JupyterHub's start_timeout (which
        # runs from here): removing the job and its staged files takes seconds.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(1, int(self.start_timeout) - 15)
        self.ip, self.port, self.last_end, self.lab_socket = "0.0.0.0", 0, {}, ""  # noqa: S104 - until known
        self.token_fetched = 0.0  # a new lab's first token is not held back by the last session's
        if self.server:
            self.server.port = 0
        await self.submit_batch_script()
        self.join_cull_group()
        submitted, waited = time.monotonic(), False
        self.reported = asyncio.Event()
        force = True  # the first look is fresh: the shared view predates the job
        while True:  # until the job runs and its lab's tunnel is open; a job that dies or is held fails at once
            status = await self.query_job_status(force=force)
            force = False
            if status == JobStatus.RUNNING and not waited:
                metrics.SESSION_QUEUE_WAIT_SECONDS.labels(self.session.group).observe(time.monotonic() - submitted)
                waited = True
            if status == JobStatus.NOTFOUND:
                error = messages.start_failure(self.job_id, self.job_info, self.session, self.server_key)
                await self._abandon()
                raise error
            if status == JobStatus.RUNNING and self.lab_socket and not self.port:
                await self.open_tunnel()
            if status == JobStatus.RUNNING and self.port:
                break
            if loop.time() > deadline:
                why = self.pending_message() or f"Session job {self.job_id} runs but its lab did not report its socket"
                await self._abandon()
                raise StartFailed(f"The session did not start within {self.start_timeout} s. {why}.", "timeout")
            # The lab's report wakes the wait at once, and the next look at the job is
            # fresh (the shared view may be up to its max_age behind the job).
            force = await wait_event(self.reported, self.startup_poll_interval)
            self.reported.clear()
        self.ip = self.state_gethost()
        try:  # the lab reports its socket once it listens: only this session's certificate may answer there
            await self.check_identity(self.ip, self.port)
        except (identity.IdentityError, OSError, TimeoutError) as exc:
            await self._abandon()
            raise StartFailed(messages.not_this_session(self.ip, self.port, exc), "identity") from None
        self.log.info("Session job %s of %s runs at %s:%s", self.job_id, self.user.name, self.ip, self.port)
        self.session = self.session.started_now()
        self.record("start", host=self.ip)
        return self.lab.transport.server_address(self.ip, self.port)

    def join_cull_group(self) -> None:
        """Make the session's user group the user's only JupyterHub group: its idle culler alone may end it."""
        sync = getattr(self.user, "sync_groups", None)
        if sync is not None:
            sync([self.session.group])

    # ---- stop -----------------------------------------------------------------------

    async def stop(self, now: bool = False):
        if not self.job_id:
            return
        self.log.info("Stopping session job %s of %s", self.job_id, self.user.name)
        limit = policy.idle_limit(self.groups(), self.session)
        last = self.last_activity if self.orm_spawner is not None else None
        if self.stop_reason == "stopped" and limit and policy.idle_for(last) >= limit:
            self.stop_reason, self.last_end = "idle", messages.idle_end(limit, self.session.group)
        if self.started_at():
            self.record("stop", host=self.job_info.host or self.ip, reason=self.stop_reason)
        self.stop_reason = "stopped"
        if not now and await self.request_shutdown():
            # The lab exits, the job ends normally and Condor brings its files back
            # (once the tunnel's ssh session, which the starter waits for, is gone).
            await self.close_tunnel()
            wait = wait_gone(self.status_cache, self.job_id, self.stop_grace, self.stop_transfer_timeout)
            gone, self.job_info = await wait
            if gone:
                return await self.clean_staging()
            self.log.warning("Session job %s did not end by itself; removing it", self.job_id)
        await self.cancel_batch_job()
        for _ in range(10):
            status = await self.query_job_status(force=True)
            if status not in (JobStatus.RUNNING, JobStatus.UNKNOWN) and self.job_info.state != State.IDLE:
                break
            await asyncio.sleep(1)
        if self.job_info.state == State.GONE:
            await self.clean_staging()

    # ---- poll -------------------------------------------------------------------------

    async def poll(self):
        # JupyterHub polls from its periodic check and from page requests at the
        # same time: one poll at a time decides, so a session ends once.
        if self.ending:
            return None  # a walltime stop is under way; its end is reported once, by that poll
        async with self.__dict__.setdefault("_poll_lock", asyncio.Lock()):
            return None if self.ending else await self._poll()

    async def _poll(self):
        status = await self.query_job_status()
        if status == JobStatus.RUNNING and policy.over_walltime(self.session):
            # Ended as a stop is: its files come back. HTCondor's hold is only the backstop.
            self.log.warning("Session job %s of %s reached its walltime; ending it", self.job_id, self.user.name)
            self.stop_reason, self.ending = "walltime", True
            try:
                await self.stop()
            finally:
                self.ending = False
            self.clear_state()
            return 0
        problem = None
        changed = (
            policy.tampered(self.session, self.job_info) if status in (JobStatus.PENDING, JobStatus.RUNNING) else ""
        )
        if changed:
            problem = "changed", f"its job was changed after submission ({changed}); the session was ended"
        elif status == JobStatus.RUNNING:
            problem = await self.ensure_tunnel() or await self.lab_lost()
        if problem:  # the route goes at once; the job is removed so nothing keeps the slot
            self.session_ended(*problem)
            await self._abandon()
            return 1
        if status in (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.UNKNOWN):
            return None
        ended = messages.job_ended(self.job_info, self.ip, self.session)
        if ended:
            self.session_ended(*ended)
        if self.job_info.state == State.HELD:
            await self.cancel_batch_job()
        if self.job_info.state in (State.GONE, State.HELD):
            await self.clean_staging()
        else:
            await self.close_tunnel()
        self.clear_state()
        return 1

    async def lab_lost(self) -> tuple[str, str] | None:
        """(reason, message) when the running session's lab is gone (LabLink.lost); None while it is there."""
        if not (self.started_at() and self.port and self.job_info.state == State.RUNNING):
            return None
        host = self.job_info.host or self.ip
        return await self.lab.lost(host, self.port, self.session.cert_sha256, self.status_cache)


__all__ = ["CondorlabSpawner"]
