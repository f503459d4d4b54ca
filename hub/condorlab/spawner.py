"""CondorlabSpawner: a user's JupyterLab as an ordinary HTCondor job.

Differences from batchspawner's CondorSpawner:

- the job is submitted and removed as the user through one sudo-allowed
  helper, which renders the site's Jinja2 session template with checked values
  only: the hub can start sessions as the user, nothing else;
- the session's environment (with its API token) travels as a 0600 file
  through Condor's file transfer, never in the job's ClassAd or environment;
- job states come from one shared schedd query per poll cycle through the
  htcondor bindings; a failed query leaves sessions alive ("unknown"), a held
  job is reported with its hold reason and removed; an evicted session is
  reported ended (its job reruns only to bring the work directory back);
- with internal TLS, each session gets its own key and certificate
  (identity.py): named only as needed, valid for the session's time, and
  pinned: the hub routes to a lab, checks its health and sends it a shutdown
  token only over a connection on which that very certificate answered, so a
  user's job squatting on another session's port is never routed to. The key,
  certificate and CA bundle travel as 0600 files with the job (the job's host
  is not known when they are made) and the staged copies are deleted when the
  session ends; a session on a node the names do not cover fails at once;
- a session whose job requests were changed after submission (condor_qedit
  by its owner) is ended: the hub, not the job, says what a session gets;
- the options form offers the profiles of the user's groups (from the
  inventory's user groups); a request outside them, or above a profile's
  limits, is refused with a message, and the job helper checks it again.
  Start options are bounded (profiles.check_bounds) before JupyterHub stores
  them (the form here, the REST API in handlers.py); refused ones are not kept
  as the server's defaults;
- every session start and stop is recorded for accounting (accounting.py);
- the port is reported to our own handler (see handlers.py), which accepts
  one integer port in the configured range and nothing else;
- stopping asks the lab to shut down, so the job ends normally and Condor
  transfers the session's work directory back; only then is it removed.
"""

from __future__ import annotations

import asyncio
import datetime
import html
import json
import os
import ssl
import time

from batchspawner import CondorSpawner, JobStatus
from jupyterhub.utils import make_ssl_context
from sqlalchemy.orm import object_session
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from traitlets import Any, Dict, Float, Integer, List, Tuple, Unicode, default

from . import contract, handlers, identity, metrics, profiles
from .accounting import SESSION_RECORDS, SessionRecorder
from .jobs import JobInfo, State, shared_cache

handlers.install()
metrics.register(shared_cache)


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
        self.reason = reason  # for the start-failure metric: held, memory, exited, timeout, node-not-covered, identity

    def __str__(self) -> str:
        return self.message


class CondorlabSpawner(CondorSpawner):
    job_helper = Unicode(
        "/opt/condorlab/hub/bin/condorlab-job",
        help="""The job helper (condorlab.helper), run as the user through sudo to submit and remove
        session jobs: a console script of the hub's root-owned virtualenv.""",
    ).tag(config=True)

    job_seal = Unicode(
        "/opt/condorlab/hub/bin/condorlab-seal",
        help="""The seal (condorlab.seal), run as root through sudo: it makes the job the helper submitted
        on hold a session job (a mark no submitter can set) and releases it.""",
    ).tag(config=True)

    port_range = Tuple(
        Integer(),
        Integer(),
        default_value=(50000, 50999),
        help="Ports the singleuser server may report (inclusive); the same range as the job helper's.",
    ).tag(config=True)

    user_groups_file = Unicode(
        contract.USER_GROUPS_FILE,
        help="""The user groups and their profiles as the inventory's filter normalises them
        (contract.py); read again when it changes, so an inventory edit needs no hub restart.""",
    ).tag(config=True)

    user_groups = List(
        Dict(),
        help="The user groups in that form, given here instead of user_groups_file (tests, one-off hubs).",
    ).tag(config=True)

    accounting_records = Unicode(SESSION_RECORDS, help="File the session start and stop records go to.").tag(
        config=True
    )

    stop_grace = Integer(30, help="Seconds a stopping session gets to end by itself before it is removed.").tag(
        config=True
    )

    stop_transfer_timeout = Integer(
        600, help="Seconds a stopping session may spend sending its work directory back before it is removed."
    ).tag(config=True)

    proxy_alt_names = List(
        Unicode(),
        help="""Names the proxy checks a lab's certificate against when users share the hub's origin
        (no subdomain_host): the public names. With subdomain_host, the user's own domain is used instead.""",
    ).tag(config=True)

    cert_margin = Integer(
        900,
        help="Seconds a session certificate stays valid beyond the start timeout plus the profile's walltime.",
    ).tag(config=True)

    form_status_timeout = Float(
        3.0,
        help="Seconds the options form waits for the share's state; the form is shown without it after that.",
    ).tag(config=True)

    lost_after = Integer(
        45,
        help="""Seconds a running session's lab may go without answering the hub's health check (its node
        crashed, the network is cut) before the session is ended and its job removed. A shorter blip keeps it.""",
    ).tag(config=True)

    lab_exit_grace = Integer(
        8,
        help="""Seconds nothing may listen on a running session's port while its job still runs before the
        session is ended as "lab died": its job usually leaves the queue first, with the reason (an exit, a hold).""",
    ).tag(config=True)

    @default("poll_interval")
    def _poll_interval_default(self):
        # A lost node is noticed within lost_after plus one interval; a poll reads
        # the shared queue view and opens one TLS connection to the lab.
        return 10

    status_cache = Any(help="The shared job status cache (one schedd query per cycle).")

    @default("status_cache")
    def _status_cache_default(self):
        shared_cache.keep_fresh(30)  # the hub's metrics stay current without sessions
        return shared_cache

    # The session the user asked for, checked against their groups (profiles.resolve).
    session = Dict()

    # Why the next stop happens, for the session record.
    stop_reason = Unicode("stopped")

    # Set while poll() ends a session at its walltime.
    ending = Any(False)

    # The session's TLS files (name -> PEM text) for the next submission.
    tls_files = Any(None)

    # The last state read from the cache.
    job_info = Any(JobInfo(State.GONE))

    # How the user's last session ended when the user did not end it (reason,
    # message, time): kept across sessions and hub restarts, shown on the form.
    last_end = Dict()

    # Since when (time.time()) the running lab has not answered the health check; 0 while it answers.
    unreachable_since = Float(0)

    # Since when nothing has listened on the running lab's port; 0 while it answers.
    refused_since = Float(0)

    # ---- names -----------------------------------------------------------

    @property
    def server_key(self) -> str:
        """Name of this server's staging directory: "default", or "named-<name>"."""
        return contract.server_key(self.name)

    # ---- port report -----------------------------------------------------

    def accept_port(self, port: int) -> str:
        """Take a port reported by this server's own job; return an error message or ''."""
        low, high = self.port_range
        if not low <= port <= high:
            return f"port {port} is outside the allowed range {low}-{high}"
        if not self.job_id or self.port:
            return "this server is not waiting for a port"
        self.port = port
        return ""

    # ---- profiles ------------------------------------------------------------

    def unix_groups(self) -> set[str]:
        return contract.unix_groups_of(self.user.name)

    def groups(self) -> list[dict]:
        """The user groups: the configured ones, else the normalised file."""
        return list(self.user_groups) or contract.load_user_groups(self.user_groups_file)

    @default("options_form")
    def _options_form_default(self):
        async def form(spawner: CondorlabSpawner) -> str:
            # The share's state of this cycle: the form says which profiles could
            # start now. A schedd or collector that does not answer at once does not
            # hold the form up (the query goes on for the next page).
            available = contract.choices(spawner.groups(), spawner.unix_groups())
            notice = profiles.last_end_notice(spawner.last_end)
            try:
                await asyncio.wait_for(
                    asyncio.shield(spawner.status_cache.refresh()), timeout=spawner.form_status_timeout
                )
            except TimeoutError:
                spawner.log.info(
                    "The share's state is not known within %s s; the form shows none", spawner.form_status_timeout
                )
                return notice + profiles.form_html(available, None)
            return notice + profiles.form_html(available, spawner.status_cache.share)

        return form

    def options_from_form(self, formdata: dict) -> dict:
        """The form's (or the /hub/spawn query's) options, refused (400) before JupyterHub stores them if too long."""
        options = {}
        for key in profiles.OPTION_KEYS:
            value = (formdata.get(key) or [""])[0].strip()
            if value:
                options[key] = value
        try:
            return profiles.check_bounds(options)
        except profiles.OptionsError as exc:
            raise web.HTTPError(400, f"Cannot start this session: {exc}") from None

    @default("apply_user_options")
    def _apply_user_options_default(self):
        return CondorlabSpawner.check_options

    @staticmethod
    def check_options(spawner: CondorlabSpawner, user_options: dict) -> None:
        """Take the session the user asked for, or refuse it (400) with the reason and forget the options."""
        try:
            spawner.session = profiles.resolve(spawner.groups(), spawner.unix_groups(), dict(user_options or {}))
        except profiles.OptionsError as exc:
            spawner.forget_options()
            raise web.HTTPError(400, f"Cannot start this session: {exc}") from None

    def forget_options(self) -> None:
        """Drop refused start options: JupyterHub stored them as this server's defaults before they were checked."""
        self.user_options = {}
        orm_spawner = self.orm_spawner
        if orm_spawner is not None and orm_spawner.user_options:
            orm_spawner.user_options = {}
            db = object_session(orm_spawner)
            if db is not None:
                db.commit()

    def record(self, event: str, **facts) -> None:
        """Append a session start or stop record; a failure is logged, never fatal."""
        session = self.session or {}
        try:
            SessionRecorder(self.accounting_records).record(
                event,
                user=self.user.name,
                server=self.server_key,
                job=self.job_id,
                group=session.get("group"),
                accounting_group=session.get("accounting_group"),
                profile=session.get("profile"),
                request_cpus=session.get("request_cpus"),
                request_memory_mb=session.get("request_memory_mb"),
                request_gpus=session.get("request_gpus"),
                walltime=session.get("walltime"),
                **facts,
            )
        except OSError as exc:
            self.log.warning("Could not record the session %s of %s: %s", event, self.user.name, exc)
        if event == "stop":
            metrics.SESSION_ENDS.labels(facts.get("reason") or "stopped", session.get("group") or "-").inc()

    def over_walltime(self) -> bool:
        """Whether the running session has reached its profile's walltime."""
        started, walltime = self.session.get("started"), self.session.get("walltime")
        return bool(started and walltime) and time.time() - started >= walltime

    def get_state(self) -> dict:
        state = super().get_state()
        if self.session:
            state["condorlab_session"] = self.session
        if self.last_end:
            state["condorlab_last_end"] = self.last_end
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.session = state.get("condorlab_session") or {}
        self.last_end = state.get("condorlab_last_end") or {}

    def clear_state(self) -> None:
        # The session goes; how it ended stays for the user to read.
        super().clear_state()
        self.session = {}
        self.job_info = JobInfo(State.GONE)
        self.unreachable_since = 0
        self.refused_since = 0

    def session_ended(self, reason: str, message: str) -> None:
        """A session ended without the user asking: record why, and keep the message for the user."""
        self.log.warning("Session job %s of %s ended (%s): %s", self.job_id, self.user.name, reason, message)
        if self.started_at():
            held = {}
            if self.job_info.state == State.HELD:
                held = {"hold_code": self.job_info.hold_code, "hold_subcode": self.job_info.hold_subcode}
            self.record("stop", host=self.job_info.host or self.ip, reason=reason, detail=message, **held)
        self.last_end = {"reason": reason, "message": message, "time": round(time.time())}

    # ---- internal TLS ----------------------------------------------------

    def session_alt_names(self) -> list[str]:
        """The names a session certificate carries, and why.

        The execute nodes (ssl_alt_names): the hub reaches the lab by its node's
        name. The name the proxy checks the lab against, which Node takes from
        the Host the browser used: the user's own domain with subdomain_host,
        otherwise the public names. Never localhost or the hub's names.
        """
        names = list(self.ssl_alt_names) if isinstance(self.ssl_alt_names, list) else []
        if self.user.settings.get("subdomain_host"):
            names.append(f"DNS:{self.user.domain}")
        else:
            names += list(self.proxy_alt_names)
        return list(dict.fromkeys(names))

    async def create_certs(self) -> dict:
        """A fresh key and certificate for this session only (identity.py), kept in memory.

        Returns the PEM texts; nothing is written to the hub's store. The
        certificate is valid until the session's start timeout and walltime
        have passed, plus cert_margin.
        """
        store = self.internal_certs_location
        with open(os.path.join(store, "notebooks-ca", "notebooks-ca.crt")) as handle:
            ca_cert = handle.read()
        with open(os.path.join(store, "notebooks-ca", "notebooks-ca.key")) as handle:
            ca_key = handle.read()
        with open(self.internal_trust_bundles["notebooks-ca"]) as handle:
            ca_bundle = handle.read()
        lifetime = int(self.start_timeout) + int(self.session.get("walltime") or 0) + int(self.cert_margin)
        names = self.session_alt_names()
        key, cert = identity.make_session_cert(ca_cert, ca_key, f"user-{self.user.name}", names, lifetime)
        self.log.info("Session certificate for %s: %s, valid %s s", self._log_name, ";".join(names), lifetime)
        return {"keyfile": key, "certfile": cert, "cafile": ca_bundle}

    async def move_certs(self, paths: dict) -> dict:
        """Send the session's TLS files with the job; keep only the certificate's fingerprint.

        They are handed to the job helper on its standard input and travel as
        0600 files with the job, which sees them under fixed names in its
        sandbox. The hub pins the certificate: it talks to the lab only when
        that certificate answers.
        """
        self.tls_files = {name: paths[kind] for kind, name in contract.TLS_FILES.items()}
        self.session = {**self.session, "cert_sha256": identity.fingerprint(paths["certfile"])}
        return dict(contract.TLS_FILES)

    async def check_identity(self, host: str, port: int) -> None:
        """Raise unless this session's own lab answers on host:port (identity.check_lab)."""
        context = self.internal_ssl_context()
        if context is None:
            return
        pinned = self.session.get("cert_sha256")
        if not pinned:
            raise identity.IdentityError("this session has no certificate on record")
        await identity.check_lab(host, port, context, pinned)

    def internal_ssl_context(self) -> ssl.SSLContext | None:
        """The hub's client context for talking to a lab (mutual TLS), or None without internal TLS."""
        if not self.internal_ssl:
            return None
        settings = self.user.settings
        return make_ssl_context(
            settings["internal_ssl_key"], settings["internal_ssl_cert"], cafile=settings["internal_ssl_ca"]
        )

    def host_covered(self, host: str) -> bool:
        """Whether the session certificate's names (ssl_alt_names) cover this host."""
        if not self.internal_ssl:
            return True
        names = self.ssl_alt_names if isinstance(self.ssl_alt_names, list) else []
        return any(name_covers(name, host) for name in names)

    # ---- the job helper --------------------------------------------------

    def helper_cmd(self, *args: str) -> list[str]:
        contract.check_user_name(self.user.name)
        return ["sudo", "-n", "-u", self.user.name, "--", self.job_helper, *args]

    def seal_cmd(self, cluster: str) -> list[str]:
        contract.check_user_name(self.user.name)
        return ["sudo", "-n", "--", self.job_seal, self.user.name, self.server_key, cluster]

    async def run_helper(self, *args: str, stdin: str | None = None) -> dict:
        return await self._run_json(self.helper_cmd(*args), f"condorlab-job {args[0]}", stdin)

    async def seal_job(self) -> dict:
        """Make the job the helper submitted on hold a session job, and release it (seal.py, as root)."""
        return await self._run_json(self.seal_cmd(self.job_id), "condorlab-seal")

    async def _run_json(self, command: list[str], what: str, stdin: str | None = None) -> dict:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        if proc.returncode != 0:
            raise RuntimeError(f"{what} failed ({proc.returncode}): {err.decode().strip()[:500]}")
        return json.loads(out)

    async def submit_batch_script(self) -> str:
        key = self.server_key  # refuses a server name outside the contract
        if not self.session:
            self.check_options(self, self.user_options)
        env = {k: str(v) for k, v in self.get_env().items()}
        avoid = self.status_cache.avoided_nodes()
        request = contract.submit_request(key, env, self.session, self.tls_files, avoid)
        try:
            reply = await self.run_helper("submit", stdin=json.dumps(request))
        finally:
            self.tls_files = None
        self.job_id = str(reply["cluster"])
        # Submitted on hold: the seal makes it a session job and releases it.
        try:
            await self.seal_job()
        except (OSError, RuntimeError, ValueError) as exc:
            self.log.error("Could not seal session job %s of %s: %s", self.job_id, self.user.name, exc)
            await self._abandon()
            raise StartFailed(
                "The session job could not be made a session (the hub's seal failed); try again, "
                "and tell the site's administrators if it fails again",
                "seal",
            ) from None
        self.log.info(
            "Session of %s (%s, %s/%s) is job %s, working in %s",
            self.user.name,
            self.server_key,
            self.session["group"],
            self.session["profile"],
            self.job_id,
            reply.get("work_dir"),
        )
        return self.job_id

    # ---- state -----------------------------------------------------------

    async def query_job_status(self, force: bool = False) -> JobStatus:
        if not self.job_id:
            self.job_info = JobInfo(State.GONE)
            self.job_status = ""
            return JobStatus.NOTFOUND
        self.job_info = await self.status_cache.get(self.job_id, force=force)
        self.job_status = self.job_info.state.value
        if self.job_info.state == State.IDLE and self.job_info.starts > 0 and self.port:
            # Evicted: the lab is gone; the job reruns only to bring its files back.
            return JobStatus.NOTFOUND
        return {
            State.IDLE: JobStatus.PENDING,
            State.RUNNING: JobStatus.RUNNING,
            # Suspended by the startd: the lab is alive and resumes.
            State.SUSPENDED: JobStatus.RUNNING,
            State.UNKNOWN: JobStatus.UNKNOWN,
            # A held session never resumes by itself: it is reported and removed.
            State.HELD: JobStatus.NOTFOUND,
            State.GONE: JobStatus.NOTFOUND,
        }[self.job_info.state]

    def state_ispending(self) -> bool:
        return self.job_info.state == State.IDLE

    def state_isrunning(self) -> bool:
        return self.job_info.state in (State.RUNNING, State.SUSPENDED)

    def state_isunknown(self) -> bool:
        return self.job_info.state == State.UNKNOWN

    def state_gethost(self) -> str:
        return self.job_info.host

    async def cancel_batch_job(self) -> None:
        if self.job_id:
            self.log.info("Removing job %s of %s", self.job_id, self.user.name)
            await self.run_helper("remove", self.job_id)

    async def clean_staging(self) -> None:
        """Delete the session's staged secrets (token file, key, certificate) once its job has left."""
        try:
            await self.run_helper("clean", self.server_key)
        except (OSError, RuntimeError, ValueError) as exc:
            self.log.warning("Could not delete the staged secrets of %s: %s", self._log_name, exc)

    def tampered(self) -> str:
        """Why the job no longer matches what the hub submitted, or ''."""
        info, session = self.job_info, self.session
        wanted = {"RequestCpus": session.get("request_cpus"), "RequestMemory": session.get("request_memory_mb")}
        found = {"RequestCpus": info.request_cpus, "RequestMemory": info.request_memory_mb}
        changed = [f"{k} {found[k]} (submitted {v})" for k, v in wanted.items() if v and found[k] not in (None, v)]
        return ", ".join(changed)

    async def lab_lost(self) -> tuple[str, str] | None:
        """(reason, message) when the running session's lab is gone; None while it answers, or for a short blip.

        Nothing listening, or another certificate, means the lab is gone at once.
        No answer at all (a crashed node, a cut network) is a blip until it has
        lasted lost_after seconds: then the node is taken as lost.
        """
        if not (self.started_at() and self.port and self.job_info.state == State.RUNNING):
            return None
        host = self.job_info.host or self.ip
        try:
            await self.check_identity(host, self.port)
        except identity.IdentityError:
            return "lost", f"another process answers on {host}:{self.port} in place of your lab; the session was ended"
        except ConnectionRefusedError:
            # The lab exits a moment before its job leaves the queue (a stop from
            # the lab's menu, a hold over memory): the queue says why, once it knows.
            now = time.time()
            self.refused_since = self.refused_since or now
            if now - self.refused_since < self.lab_exit_grace:
                return None
            return "lab-died", f"your lab on {host} stopped (nothing listens on port {self.port} any more)"
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            now = time.time()
            self.unreachable_since = self.unreachable_since or now
            silent = now - self.unreachable_since
            if silent < self.lost_after:
                self.log.info(
                    "Health check of %s's lab on %s did not answer for %.0f s: %s", self._log_name, host, silent, exc
                )
                return None
            since = time.strftime("%H:%M:%S %Z", time.localtime(self.unreachable_since))
            self.status_cache.node_lost(host, self.unreachable_since)
            return "node-lost", f"the node running your session, {host}, stopped answering at {since}"
        self.unreachable_since = 0
        self.refused_since = 0
        return None

    def started_at(self) -> float:
        return float(self.session.get("started") or 0)

    async def poll(self):
        # JupyterHub polls from its periodic check and from page requests at
        # the same time: one poll at a time decides, so a session ends once.
        if self.ending:
            return None  # a walltime stop is under way; its end is reported once, by that poll
        lock = self.__dict__.setdefault("_poll_lock", asyncio.Lock())
        async with lock:
            return await self._poll()

    async def _poll(self):
        if self.ending:
            return None  # a walltime stop is under way; its end is reported once, by that poll
        status = await self.query_job_status()
        if status == JobStatus.RUNNING and self.over_walltime():
            # End it as a stop does: the lab shuts down, the job ends normally
            # and its files come back. HTCondor's hold is only the backstop.
            self.log.warning(
                "Session job %s of %s reached its walltime of %s s; ending it",
                self.job_id,
                self.user.name,
                self.session["walltime"],
            )
            self.stop_reason = "walltime"
            self.ending = True
            try:
                await self.stop()
            finally:
                self.ending = False
            self.clear_state()
            return 0
        problem = None
        if status in (JobStatus.PENDING, JobStatus.RUNNING):
            changed = self.tampered()
            if changed:
                problem = "changed", f"its job was changed after submission ({changed}); the session was ended"
            elif status == JobStatus.RUNNING:
                problem = await self.lab_lost()
        if problem:
            # The route goes at once (JupyterHub removes it when poll reports
            # the end); the job is removed so nothing keeps the slot.
            self.session_ended(*problem)
            await self._abandon()
            return 1
        if status in (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.UNKNOWN):
            return None
        info = self.job_info
        if info.state == State.HELD:
            self.session_ended(*self.hold_explained())
            await self.cancel_batch_job()
        elif info.state == State.IDLE:
            self.session_ended("evicted", f"HTCondor evicted your session's job from {info.host or self.ip}")
        elif self.started_at():
            self.session_ended(
                "ended", f"your lab on {info.host or self.ip} exited (shut down from the lab, or it stopped)"
            )
        if info.state in (State.GONE, State.HELD):
            await self.clean_staging()
        self.clear_state()
        return 1

    def hold_explained(self) -> tuple[str, str]:
        """(reason, message) for a held session job, in the user's terms where HTCondor's code says what happened."""
        info = self.job_info
        if info.over_memory:
            limit = self.session.get("request_memory_mb") or info.request_memory_mb
            return "memory", (
                f"your session used more than {limit} MB of memory, what its profile requests; "
                f"start a profile with more memory (HTCondor: {info.hold_reason})"
            )
        return "held", f"HTCondor held your session's job: {info.hold_reason}"

    # ---- what a waiting session waits for -------------------------------

    def pending_message(self) -> str:
        """Where the session's job waits and why, from this cycle's queue and share views; '' once it runs."""
        info, job = self.job_info, f"Session job {self.job_id}"
        if info.state == State.HELD:
            return f"{job} is held by HTCondor: {info.hold_reason}"
        if info.state == State.UNKNOWN:
            return f"{job} is queued; the access point's queue does not answer just now"
        if info.state != State.IDLE:
            return ""
        ahead = self.status_cache.waiting_before(self.job_id)
        queue = "no session ahead of you" if ahead == 0 else f"{ahead} session{'s' if ahead > 1 else ''} ahead of you"
        share = self.status_cache.share
        cpus = int(self.session.get("request_cpus") or 1)
        memory = int(self.session.get("request_memory_mb") or 1)
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
                cores = f"{cpus} CPU{'s' if cpus != 1 else ''}"
                message += f". No node has {cores} and {memory} MB free in the share now; it starts when one has"
        else:
            message = f"{job} is waiting for a slot: {queue}"
        reason = next((v for k, v in REJECTIONS.items() if k in info.rejected.lower()), info.rejected)
        if reason:
            message += f" (last negotiation: {reason})"
        return message

    async def progress(self):
        """The pending page's messages: where the job waits and why, each time that changes."""
        last = ""
        while True:
            if self.state_isrunning():
                yield {"message": f"Session job {self.job_id} runs on {self.job_info.host}; the lab is starting"}
                return
            message = self.pending_message() or "Submitting the session job"
            if message != last:
                yield {"message": message}
                last = message
            await asyncio.sleep(1)

    # ---- start and stop --------------------------------------------------

    def _failure(self) -> StartFailed:
        if self.job_info.state == State.HELD:
            reason, message = self.hold_explained()
            if reason == "memory":
                return StartFailed(f"The session job {self.job_id} was held: {message}", "memory")
            return StartFailed(
                f"The session job {self.job_id} was held by HTCondor: {self.job_info.hold_reason}", "held"
            )
        return StartFailed(
            f"The session job {self.job_id} ended before the lab started; see "
            f"~/{contract.staging_dir(self.server_key)}/session.err on the hub",
            "exited",
        )

    def join_cull_group(self) -> None:
        """Make the session's user group the user's only JupyterHub group.

        Each user group's idle culler may end the servers of that JupyterHub
        group's members only: so the session is culled by its own group's
        idle_timeout (a user in two user groups is not culled by the shorter
        one), and a Unix group change counts from the next start, no login needed.
        """
        sync = getattr(self.user, "sync_groups", None)
        if sync is not None and self.session.get("group"):
            sync([self.session["group"]])

    async def _abandon(self) -> None:
        """Give up a start: remove the job, delete its staged secrets, forget it."""
        await self.cancel_batch_job()
        await self.clean_staging()
        self.clear_state()

    async def start(self):
        began = time.monotonic()
        try:
            address = await self._start()
        except StartFailed as exc:
            metrics.SESSION_START_FAILURES.labels(exc.reason).inc()
            raise
        except Exception:
            metrics.SESSION_START_FAILURES.labels("error").inc()
            raise
        metrics.SESSION_START_SECONDS.labels(self.session.get("group") or "-").observe(time.monotonic() - began)
        return address

    async def _start(self):
        # JupyterHub's start_timeout runs from here: give up with the reason
        # 15 s before it (removing the job and its staged files takes a few
        # seconds), counting the submission too.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(1, int(self.start_timeout) - 15)
        self.ip = "0.0.0.0"  # noqa: S104 - placeholder until the job's host is known
        self.port = 0
        self.last_end = {}  # a new session: the last one's notice has been read
        if self.server:
            self.server.port = 0
        await self.submit_batch_script()
        self.join_cull_group()
        submitted, waited = time.monotonic(), False
        # Wait until the job runs and its server reports a port; notice a job
        # that dies or is held on the way instead of waiting for start_timeout.
        # The first look is a fresh query: the shared cache predates the job.
        force = True
        while True:
            status = await self.query_job_status(force=force)
            force = False
            if status == JobStatus.RUNNING and not waited:
                waited = True
                metrics.SESSION_QUEUE_WAIT_SECONDS.labels(self.session.get("group") or "-").observe(
                    time.monotonic() - submitted
                )
            if status == JobStatus.NOTFOUND:
                error = self._failure()
                await self._abandon()
                raise error
            if status == JobStatus.RUNNING and self.port:
                break
            if loop.time() > deadline:
                why = self.pending_message() or f"Session job {self.job_id} runs but its lab did not report a port"
                await self._abandon()
                raise StartFailed(f"The session did not start within {self.start_timeout} s. {why}.", "timeout")
            await asyncio.sleep(self.startup_poll_interval)
        self.ip = self.state_gethost()
        if not self.host_covered(self.ip):
            await self._abandon()
            raise StartFailed(
                f"The session landed on {self.ip}, which the session certificates do not cover; "
                "add the node to the condor_execute group (or set jupyterhub_internal_tls_names) and re-run site.yml",
                "node-not-covered",
            )
        # The lab reports its port only once it listens: what answers there
        # now must be this session's own certificate, or nobody is routed.
        try:
            await self.check_identity(self.ip, self.port)
        except (identity.IdentityError, OSError, TimeoutError, ssl.SSLError) as exc:
            await self._abandon()
            raise StartFailed(
                f"The session's lab on {self.ip}:{self.port} could not prove it is this session ({exc}); "
                "the job was removed, start a new session",
                "identity",
            ) from None
        self.log.info("Session job %s of %s runs at %s:%s", self.job_id, self.user.name, self.ip, self.port)
        self.session = {**self.session, "started": time.time()}
        self.record("start", host=self.ip)
        return self.ip, self.port

    async def request_shutdown(self) -> bool:
        """Ask the lab to shut down, with a token made for this and valid two minutes.

        With internal TLS the token is sent only on a connection on which the
        session's own certificate answered: never to whatever else listens there.
        """
        # The server's address survives hub restarts in the hub's database.
        if not (self.server and self.server.port):
            return False
        path = f"{self.server.base_url}api/shutdown"
        context = self.internal_ssl_context()
        pinned = self.session.get("cert_sha256")
        if context is not None and not pinned:
            self.log.info("No certificate on record for %s; not sending a shutdown token", self._log_name)
            return False
        token = self.user.new_api_token(
            note="condorlab: end the session",
            expires_in=120,
            scopes=[f"access:servers!server={self.user.name}/{self.name}"],
        )
        headers = {"Authorization": f"token {token}"}
        try:
            if context is not None:
                status = await identity.post_verified(self.server.ip, self.server.port, path, headers, context, pinned)
                if status >= 400:
                    raise OSError(f"HTTP {status}")
            else:
                request = HTTPRequest(
                    f"{self.server.host}{path}", method="POST", body=b"", headers=headers, request_timeout=10
                )
                await AsyncHTTPClient().fetch(request)
        except Exception as exc:  # the server may already be gone, or is not this session's
            self.log.info("Shutdown request to %s:%s%s failed: %s", self.server.ip, self.server.port, path, exc)
            return False
        return True

    async def _job_left(self, seconds: float) -> bool:
        """Wait until the job has left the queue; keep waiting while it sends its files back."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        hard_deadline = loop.time() + max(seconds, self.stop_transfer_timeout)
        while True:
            status = await self.query_job_status(force=True)
            if status == JobStatus.NOTFOUND and self.job_info.state in (State.GONE, State.IDLE):
                return self.job_info.state == State.GONE
            if self.job_info.state == State.HELD:
                return False
            now = loop.time()
            if now > hard_deadline or (now > deadline and not self.job_info.transferring):
                return False
            await asyncio.sleep(1)

    def last_activity(self) -> datetime.datetime | None:
        """The session's last activity as JupyterHub saw it (the lab's reports, the proxy's traffic)."""
        return getattr(self.orm_spawner, "last_activity", None) if self.orm_spawner is not None else None

    def idle_for(self) -> float:
        """Seconds since the session's last activity (0 when not known)."""
        last = self.last_activity()
        if last is None:
            return 0.0
        if last.tzinfo is None:
            last = last.replace(tzinfo=datetime.UTC)
        return (datetime.datetime.now(datetime.UTC) - last).total_seconds()

    def idle_limit(self) -> int:
        """The idle timeout of the session's user group (0: none)."""
        group = next((g for g in self.groups() if g.get("name") == self.session.get("group")), None)
        return contract.idle_timeout(group) if group else 0

    async def stop(self, now: bool = False):
        if not self.job_id:
            return
        self.log.info("Stopping session job %s of %s", self.job_id, self.user.name)
        limit = self.idle_limit()
        if self.stop_reason == "stopped" and limit and self.idle_for() >= limit:
            # Nobody used it for the group's idle timeout: the group's idle culler ended it.
            self.stop_reason = "idle"
            minutes = limit // 60
            idle = f"{minutes} minute{'' if minutes == 1 else 's'}"
            self.last_end = {
                "reason": "idle",
                "message": f"nobody used it for {idle}, the idle limit of user group "
                f"{self.session.get('group')}; your files were kept",
                "time": round(time.time()),
            }
        if self.started_at():
            self.record("stop", host=self.job_info.host or self.ip, reason=self.stop_reason)
        self.stop_reason = "stopped"
        if not now and await self.request_shutdown():
            # The lab exits, the job ends normally and Condor brings its files back.
            if await self._job_left(self.stop_grace):
                await self.clean_staging()
                return
            self.log.warning("Session job %s did not end by itself; removing it", self.job_id)
        await self.cancel_batch_job()
        for _ in range(10):
            status = await self.query_job_status(force=True)
            if status not in (JobStatus.RUNNING, JobStatus.UNKNOWN) and self.job_info.state != State.IDLE:
                break
            await asyncio.sleep(1)
        if self.job_info.state == State.GONE:
            await self.clean_staging()


def session_ends_notice(user) -> str | None:
    """The hub's home page note on how long the user's running session may still run (its walltime)."""
    spawner = getattr(user, "spawner", None) if user is not None else None
    session = getattr(spawner, "session", None) or {}
    started, walltime = session.get("started"), session.get("walltime")
    if not (started and walltime):
        return None
    ends = float(started) + int(walltime)
    left = max(0, int(ends - time.time()))
    when = time.strftime("%H:%M %Z", time.localtime(ends))
    return (
        f"Your session on {html.escape(str(spawner.ip))} may run until {when} "
        f"({left // 3600} h {left % 3600 // 60:02d} min left, the walltime of profile "
        f"{html.escape(str(session.get('group')))}/{html.escape(str(session.get('profile')))}); "
        "it is then ended like a stop and your files are kept."
    )


def name_covers(alt_name: str, host: str) -> bool:
    """Whether a subjectAltName entry ("DNS:wn1.example.org", "DNS:*.example.org") names host."""
    if not alt_name.startswith("DNS:"):
        return False
    pattern = alt_name[4:].lower().rstrip(".")
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and rest == pattern[2:]
    return host == pattern


__all__ = ["CondorlabSpawner", "name_covers", "session_ends_notice"]
