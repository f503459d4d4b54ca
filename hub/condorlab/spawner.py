"""CondorlabSpawner: a user's JupyterLab as an ordinary HTCondor job.

Differences from batchspawner's CondorSpawner:

- the submit description is rendered from a Jinja2 template file;
- the job is submitted and removed as the user through one sudo-allowed helper,
  and the session's environment (with its API token) travels as a 0600 file
  through Condor's file transfer, never in the job's ClassAd or environment;
- job states come from one shared schedd query per poll cycle through the
  htcondor bindings; a failed query leaves sessions alive ("unknown"), a held
  job is reported with its hold reason and removed;
- the port is reported to our own handler (see handlers.py), which accepts
  one integer port in the configured range and nothing else;
- stopping asks the lab to shut down, so the job ends normally and Condor
  transfers the session's work directory back; only then is it removed.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from pathlib import Path

import jinja2
from batchspawner import CondorSpawner, JobStatus
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from traitlets import Any, Integer, Tuple, Unicode, default

from . import handlers
from .jobs import SERVER_ATTR, SESSION_ATTR, JobInfo, State, shared_cache

handlers.install()

SERVER_KEY = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class CondorlabSpawner(CondorSpawner):
    submit_template = Unicode(
        "/etc/jupyterhub/session.sub.j2",
        help="Jinja2 template of the session's submit description.",
    ).tag(config=True)

    job_helper = Unicode(
        "/usr/local/libexec/condorlab/condorlab-job",
        help="Helper run as the user (through sudo) to submit and remove session jobs.",
    ).tag(config=True)

    session_command = Unicode(
        "/opt/condorlab/singleuser/bin/condorlab-session",
        help="The job's executable on the execute nodes: prepares the session and starts the lab.",
    ).tag(config=True)

    port_range = Tuple(
        Integer(),
        Integer(),
        default_value=(50000, 50999),
        help="Ports the singleuser server may listen on (inclusive); the firewall opens only these.",
    ).tag(config=True)

    shared_area = Unicode(
        "",
        help="Directory of the user in a shared filesystem mounted on the execute nodes, with "
        "{username}; the lab opens there when it exists. Empty: no shared area.",
    ).tag(config=True)

    transfer_dir = Unicode(
        "condorlab",
        help="Without a shared area: directory in the user's home on the access point that is "
        "transferred to the session and back when it ends or is evicted.",
    ).tag(config=True)

    request_cpus = Integer(1, help="CPUs requested for a session.").tag(config=True)
    request_memory = Unicode("2GB", help="Memory requested for a session (HTCondor units).").tag(config=True)

    stop_grace = Integer(
        30, help="Seconds a stopping session gets to end by itself (and transfer its files) before it is removed."
    ).tag(config=True)

    exec_prefix = Unicode("sudo -n -u {username}").tag(config=True)

    status_cache = Any(help="The shared job status cache (one schedd query per cycle).")

    @default("status_cache")
    def _status_cache_default(self):
        return shared_cache

    # The last state read from the cache.
    job_info = Any(JobInfo(State.GONE))

    # ---- names and paths -------------------------------------------------

    @property
    def server_key(self) -> str:
        """Name of this server's staging directory and of its jobs' CondorlabServer attribute."""
        return self.name or "default"

    def shared_dir(self) -> str:
        if not self.shared_area:
            return ""
        path = self.shared_area.format(username=self.user.name)
        return path if Path(path).is_dir() else ""

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

    # ---- submission ------------------------------------------------------

    def render_submit(self, shared_dir: str) -> str:
        path = Path(self.submit_template)
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(path.parent)),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            autoescape=False,  # noqa: S701 - renders an HTCondor submit description, not HTML
        )
        return env.get_template(path.name).render(
            username=self.user.name,
            server_key=self.server_key,
            staging=f".condorlab/sessions/{self.server_key}",
            session_command=self.session_command,
            shared_dir=shared_dir,
            transfer_dir=self.transfer_dir,
            request_cpus=self.request_cpus,
            request_memory=self.request_memory,
            session_attr=SESSION_ATTR,
            server_attr=SERVER_ATTR,
        )

    def session_file(self, shared_dir: str) -> str:
        """The 0600 file the job reads its environment from (it holds the API token)."""
        return json.dumps(
            {
                "env": self.get_env(),
                "work_dir": shared_dir or self.transfer_dir,
                "port_range": list(self.port_range),
            }
        )

    def helper_cmd(self, *args: str) -> list[str]:
        prefix = self.exec_prefix.format(username=self.user.name)
        return [*shlex.split(prefix), self.job_helper, *args]

    async def run_helper(self, *args: str, input: str | None = None) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self.helper_cmd(*args),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        out, err = await proc.communicate(input.encode() if input is not None else None)
        if proc.returncode != 0:
            raise RuntimeError(f"condorlab-job {args[0]} failed ({proc.returncode}): {err.decode().strip()}")
        return out.decode()

    async def submit_batch_script(self) -> str:
        if not SERVER_KEY.match(self.server_key):
            raise ValueError(f"server name {self.name!r} is not usable; use letters, digits, '.', '_' and '-'")
        shared_dir = self.shared_dir()
        payload = {
            "server": self.server_key,
            "submit": self.render_submit(shared_dir),
            "session": self.session_file(shared_dir),
            "transfer_dir": "" if shared_dir else self.transfer_dir,
        }
        self.log.info(
            "Submitting session of %s (%s) with work directory %s",
            self.user.name,
            self.server_key,
            shared_dir or f"~/{self.transfer_dir} (transferred)",
        )
        out = await self.run_helper("submit", input=json.dumps(payload))
        self.job_id = str(json.loads(out)["cluster"])
        self.log.info("Session of %s is job %s", self.user.name, self.job_id)
        return self.job_id

    # ---- state -----------------------------------------------------------

    async def query_job_status(self, force: bool = False) -> JobStatus:
        if not self.job_id:
            self.job_info = JobInfo(State.GONE)
            self.job_status = ""
            return JobStatus.NOTFOUND
        self.job_info = await self.status_cache.get(self.job_id, force=force)
        self.job_status = self.job_info.state.value
        return {
            State.IDLE: JobStatus.PENDING,
            State.RUNNING: JobStatus.RUNNING,
            State.UNKNOWN: JobStatus.UNKNOWN,
            # A held session never resumes by itself: it is reported and removed.
            State.HELD: JobStatus.NOTFOUND,
            State.GONE: JobStatus.NOTFOUND,
        }[self.job_info.state]

    def state_ispending(self) -> bool:
        return self.job_info.state == State.IDLE

    def state_isrunning(self) -> bool:
        return self.job_info.state == State.RUNNING

    def state_isunknown(self) -> bool:
        return self.job_info.state == State.UNKNOWN

    def state_gethost(self) -> str:
        return self.job_info.host

    async def cancel_batch_job(self) -> None:
        if self.job_id:
            self.log.info("Removing job %s of %s", self.job_id, self.user.name)
            await self.run_helper("remove", self.job_id)

    async def poll(self):
        status = await self.query_job_status()
        if status in (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.UNKNOWN):
            return None
        if self.job_info.state == State.HELD:
            self.log.warning("Session job %s of %s is held: %s", self.job_id, self.user.name, self.job_info.hold_reason)
            await self.cancel_batch_job()
        self.clear_state()
        return 1

    # ---- start and stop --------------------------------------------------

    def _failure(self) -> RuntimeError:
        if self.job_info.state == State.HELD:
            return RuntimeError(f"The session job {self.job_id} was held by HTCondor: {self.job_info.hold_reason}")
        return RuntimeError(
            f"The session job {self.job_id} ended before the lab started; see "
            f"~/.condorlab/sessions/{self.server_key}/session.err on the hub"
        )

    async def start(self):
        self.ip = "0.0.0.0"  # noqa: S104 - placeholder until the job's host is known
        self.port = 0
        if self.server:
            self.server.port = 0
        await self.submit_batch_script()
        # Wait until the job runs and its server reports a port; notice a job
        # that dies or is held on the way instead of waiting for start_timeout.
        # The first look is a fresh query: the shared cache predates the job.
        force = True
        while True:
            status = await self.query_job_status(force=force)
            force = False
            if status == JobStatus.NOTFOUND:
                error = self._failure()
                await self.cancel_batch_job()
                self.clear_state()
                raise error
            if status == JobStatus.RUNNING and self.port:
                break
            await asyncio.sleep(self.startup_poll_interval)
        self.ip = self.state_gethost()
        self.log.info("Session job %s of %s runs at %s:%s", self.job_id, self.user.name, self.ip, self.port)
        return self.ip, self.port

    async def request_shutdown(self) -> bool:
        """Ask the lab to shut down, with a token made for this and valid two minutes."""
        # The server's address survives hub restarts in the hub's database.
        if not (self.server and self.server.port):
            return False
        token = self.user.new_api_token(
            note="condorlab: end the session",
            expires_in=120,
            scopes=[f"access:servers!server={self.user.name}/{self.name}"],
        )
        url = f"{self.server.host}{self.server.base_url}api/shutdown"
        request = HTTPRequest(
            url, method="POST", body=b"", headers={"Authorization": f"token {token}"}, request_timeout=10
        )
        try:
            await AsyncHTTPClient().fetch(request)
        except Exception as exc:  # the server may already be gone
            self.log.info("Shutdown request to %s failed: %s", url, exc)
            return False
        return True

    async def stop(self, now: bool = False):
        if not self.job_id:
            return
        self.log.info("Stopping session job %s of %s", self.job_id, self.user.name)
        if not now and await self.request_shutdown():
            # The lab exits, the job ends normally and Condor brings its files back.
            deadline = asyncio.get_running_loop().time() + self.stop_grace
            while asyncio.get_running_loop().time() < deadline:
                if await self.query_job_status(force=True) == JobStatus.NOTFOUND:
                    return
                await asyncio.sleep(1)
            self.log.warning("Session job %s did not end within %ss; removing it", self.job_id, self.stop_grace)
        await self.cancel_batch_job()
        for _ in range(10):
            if await self.query_job_status(force=True) not in (JobStatus.RUNNING, JobStatus.UNKNOWN):
                return
            await asyncio.sleep(1)


__all__ = ["CondorlabSpawner"]
