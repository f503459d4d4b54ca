"""The session job's state as batchspawner and the pending page read it, from the shared cache (jobs.py).

batchspawner's start, stop and poll ask query_job_status() and the state_*
methods; here they answer from the one schedd query per cycle all sessions
share, never from a query of their own. The pending page's messages
(progress) say where the job waits and why, each time that changes.
"""

from __future__ import annotations

import asyncio

from batchspawner import JobStatus

from . import messages
from .jobs import JobInfo, State

# Job states as batchspawner's start/stop/poll read them. An evicted session
# (IDLE after it ran) and a held one never come back by themselves.
JOB_STATUS = {
    State.IDLE: JobStatus.PENDING,
    State.RUNNING: JobStatus.RUNNING,
    State.SUSPENDED: JobStatus.RUNNING,  # suspended by the startd: the lab is alive and resumes
    State.UNKNOWN: JobStatus.UNKNOWN,
    State.HELD: JobStatus.NOTFOUND,
    State.GONE: JobStatus.NOTFOUND,
}


class JobStateHooks:
    """batchspawner's job-state hooks and JupyterHub's progress, for CondorlabSpawner.

    Uses the spawner's job_id, job_info, port, session and status_cache.
    """

    async def query_job_status(self, force: bool = False) -> JobStatus:
        self.job_info = await self.status_cache.get(self.job_id, force=force) if self.job_id else JobInfo(State.GONE)
        self.job_status = self.job_info.state.value if self.job_id else ""
        if self.job_info.state == State.IDLE and self.job_info.starts > 0 and self.port:
            return JobStatus.NOTFOUND  # evicted: the job reruns only to bring its files back
        return JOB_STATUS[self.job_info.state]

    def state_ispending(self) -> bool:
        return self.job_info.state == State.IDLE

    def state_isrunning(self) -> bool:
        return self.job_info.state in (State.RUNNING, State.SUSPENDED)

    def state_isunknown(self) -> bool:
        return self.job_info.state == State.UNKNOWN

    def state_gethost(self) -> str:
        return self.job_info.host

    def pending_message(self) -> str:
        return messages.pending(self.job_id, self.job_info, self.session, self.status_cache)

    async def progress(self):
        """The pending page's messages: where the job waits and why, each time that changes."""
        last = ""
        while not self.state_isrunning():
            message = self.pending_message() or "Submitting the session job"
            if message != last:
                yield {"message": message}
                last = message
            await asyncio.sleep(1)
        yield {"message": f"Session job {self.job_id} runs on {self.job_info.host}; the lab is starting"}


__all__ = ["JOB_STATUS", "JobStateHooks"]
