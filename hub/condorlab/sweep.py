"""condorlab-sweep: remove session jobs that no server of the hub owns.

A session job can outlive its server: a remove that failed (the schedd was
down, the node was lost), a hub database that was lost or restored, an older
deployment. Such a job holds a slot (and in the interactive share a session
slot) until its walltime. This service, started and stopped by JupyterHub
(a managed service), compares the access point's session jobs with the
servers the hub knows, at its start and then every --every seconds, and
removes a job only when

- it carries the session marker (CondorlabSession): one the hub submitted, or
  a user's job posing as a session (it never enters the interactive share,
  which takes only jobs the hub sealed, but it is no user's to keep),
- the hub and the schedd both answered this round (an unknown view removes nothing),
- no server of the hub has that job id in its state, and the server the job
  names is not starting (a start saves its job id only once it is done),
- the job has been seen orphaned for --grace seconds and was queued more than
  --grace seconds ago.

It removes through the job helper as the job's owner (the same sudo rule the
hub uses), never touches staged files (a running server of the same name
shares them), and logs each removal.

Scopes: list:users, read:servers and admin:server_state (the servers' job ids).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import contract
from .contract import ATTRS

log = logging.getLogger("condorlab.sweep")

# Job states a sweep acts on: idle, running, held, suspended, transferring
# (removed and completed jobs are on their way out already).
LIVE_STATES = {1, 2, 5, 6, 7}


@dataclass(frozen=True)
class Job:
    cluster: int
    owner: str
    server: str  # "<user>/<server key>" as the hub submitted it
    status: int
    queued_at: int


@dataclass
class HubView:
    """What the hub owns: the job ids in its servers' states, and the servers that are starting."""

    job_ids: set[tuple[str, int]]
    starting: set[str]  # "<user>/<server key>"


def hub_view(users: Iterable[dict]) -> HubView:
    """The hub's view from its users' models (GET /users?state=active with admin:server_state)."""
    job_ids: set[tuple[str, int]] = set()
    starting: set[str] = set()
    for user in users:
        name = str(user.get("name") or "")
        if "servers" not in user:
            raise ValueError(f"the hub shows no servers of {name} (the service needs read:servers)")
        for server_name, server in (user.get("servers") or {}).items():
            if "state" not in server:
                raise ValueError(f"the hub shows no state of {name}'s servers (the service needs admin:server_state)")
            job = str((server.get("state") or {}).get("job_id") or "").split(".")[0]
            if job.isdigit():
                job_ids.add((name, int(job)))
            if server.get("pending") == "spawn" or not server.get("ready"):
                try:
                    starting.add(f"{name}/{contract.server_key(server_name)}")
                except contract.ContractError:
                    continue  # a name the hub never starts sessions for
    return HubView(job_ids, starting)


def session_jobs(ads: Iterable[dict]) -> list[Job]:
    jobs = []
    for ad in ads:
        try:
            jobs.append(
                Job(
                    cluster=int(ad["ClusterId"]),
                    owner=str(ad.get("Owner") or ""),
                    server=str(ad.get(ATTRS.server) or ""),
                    status=int(ad.get("JobStatus") or 0),
                    queued_at=int(ad.get("QDate") or 0),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return jobs


class Sweeper:
    """Remembers when each orphan was first seen; says which ones are due for removal."""

    def __init__(self, grace: float):
        self.grace = grace
        self.first_seen: dict[int, float] = {}

    def due(self, jobs: list[Job], view: HubView, now: float) -> list[Job]:
        orphans = [
            job
            for job in jobs
            if job.status in LIVE_STATES
            and (job.owner, job.cluster) not in view.job_ids
            and job.server not in view.starting
        ]
        current = {job.cluster for job in orphans}
        self.first_seen = {c: t for c, t in self.first_seen.items() if c in current}
        for job in orphans:
            self.first_seen.setdefault(job.cluster, now)
        return [
            job
            for job in orphans
            if now - self.first_seen[job.cluster] >= self.grace and now - job.queued_at >= self.grace
        ]


# ---- the hub's API and the schedd ---------------------------------------------


def _context() -> ssl.SSLContext | None:
    """The TLS context for the hub's API: JupyterHub's internal CA and this service's client certificate."""
    ca = os.environ.get("JUPYTERHUB_SSL_CLIENT_CA")
    if not ca:
        return None
    context = ssl.create_default_context(cafile=ca)
    cert, key = os.environ.get("JUPYTERHUB_SSL_CERTFILE"), os.environ.get("JUPYTERHUB_SSL_KEYFILE")
    if cert and key:
        context.load_cert_chain(cert, key)
    return context


def hub_users(api_url: str, token: str, context: ssl.SSLContext | None, page: int = 200) -> list[dict]:
    """Every user with an active or starting server, page by page."""
    users: list[dict] = []
    offset = 0
    while True:
        request = urllib.request.Request(  # noqa: S310 - the hub's own API, https
            f"{api_url.rstrip('/')}/users?state=active&offset={offset}&limit={page}",
            headers={"Authorization": f"token {token}", "Accept": "application/jupyterhub-pagination+json"},
        )
        with urllib.request.urlopen(request, timeout=30, context=context) as answer:  # noqa: S310 - the hub's own API
            body = json.load(answer)
        items = body.get("items", body) if isinstance(body, dict) else body
        users.extend(items)
        next_page = (body.get("_pagination") or {}).get("next") if isinstance(body, dict) else None
        if not next_page or not items:
            return users
        offset = int(next_page.get("offset") or offset + len(items))


def schedd_session_ads() -> list[dict]:
    import htcondor  # the distribution's bindings

    from .jobs import plain

    projection = ["ClusterId", "Owner", "JobStatus", "QDate", ATTRS.server]
    ads = htcondor.Schedd().query(constraint=f"{ATTRS.session} =?= true", projection=projection)
    return [{k: plain(ad, k) for k in projection} for ad in ads]


def remove_as_owner(helper: str, job: Job) -> None:
    if not contract.USER_NAME.fullmatch(job.owner):
        raise ValueError(f"owner {job.owner!r} is not a user name the hub starts sessions for")
    subprocess.run(  # noqa: S603 - fixed command, checked arguments
        ["/usr/bin/sudo", "-n", "-u", job.owner, helper, "remove", str(job.cluster)],
        check=True,
        capture_output=True,
        timeout=60,
    )


def sweep_once(
    sweeper: Sweeper,
    users: Callable[[], list[dict]],
    ads: Callable[[], list[dict]],
    remove: Callable[[Job], None],
    now: float | None = None,
) -> list[Job]:
    """One round: both views, then the removals that are due. Returns the jobs removed."""
    try:
        view = hub_view(users())
    except Exception as exc:  # the hub may be restarting: remove nothing this round
        log.warning("The hub's API did not answer (%s); nothing removed this round", exc)
        return []
    try:
        jobs = session_jobs(ads())
    except Exception as exc:  # the schedd may be restarting
        log.warning("The schedd did not answer (%s); nothing removed this round", exc)
        return []
    removed = []
    for job in sweeper.due(jobs, view, time.time() if now is None else now):
        try:
            remove(job)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            log.warning(
                "Could not remove orphaned session job %s of %s (%s): %s", job.cluster, job.owner, job.server, exc
            )
            continue
        log.warning(
            "Removed session job %s of %s (%s): no server of the hub owns it, orphaned for at least %s s",
            job.cluster,
            job.owner,
            job.server,
            int(sweeper.grace),
        )
        removed.append(job)
    return removed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="condorlab-sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=float, default=300, help="seconds between two rounds (default 300)")
    parser.add_argument("--grace", type=float, default=600, help="seconds a job must be orphaned (default 600)")
    parser.add_argument("--helper", required=True, help="the job helper (condorlab-job) run as the job's owner")
    parser.add_argument("--once", action="store_true", help="one round, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s condorlab-sweep] %(message)s")
    api_url, token = os.environ.get("JUPYTERHUB_API_URL"), os.environ.get("JUPYTERHUB_API_TOKEN")
    if not (api_url and token):
        sys.exit("condorlab-sweep: run as a JupyterHub service (JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN)")
    context = _context()
    sweeper = Sweeper(args.grace)
    log.info("Sweeping orphaned session jobs every %s s (grace %s s)", int(args.every), int(args.grace))
    while True:
        sweep_once(
            sweeper,
            lambda: hub_users(api_url, token, context),
            schedd_session_ads,
            lambda job: remove_as_owner(args.helper, job),
        )
        if args.once:
            return
        time.sleep(args.every)


if __name__ == "__main__":
    main()
