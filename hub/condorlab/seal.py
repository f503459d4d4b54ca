"""condorlab-seal: make a session job the hub submitted a session, which no submitter can do.

Anything a user writes in a submit description is theirs to choose, the job
helper's submissions included (it runs as the user). So what makes a job a
session for the interactive share, the negotiators and the hub's queue view
(pending page, metrics) is the seal (contract.ATTRS.sealed), which

- the access point deletes from every job at submission (a schedd transform),
- only a queue super user may set afterwards (PROTECTED_JOB_ATTRS),
- and only this command sets: the hub runs it as root through one sudo rule,

  condorlab-seal USER SERVER_KEY CLUSTER

for the job the helper has just submitted on hold for that user's server. It
seals the job only if it is that user's, names that server, is a session job
still held as submitted and unsealed; it removes any other sealed job of the
same server (one session job per server: an older one is the hub's leftover),
then releases the job and asks for a negotiation cycle. It prints
{"sealed": CLUSTER}.
"""

from __future__ import annotations

import json
import os
import sys

from . import contract
from .contract import ATTRS, ContractError

# HoldReasonCode of a job submitted with hold = true.
SUBMITTED_ON_HOLD = 15
HELD = 5


class SealError(Exception):
    """The job is not one the hub may seal."""


def check_job(ad: dict, user: str, key: str) -> None:
    """Refuse a job that is not the held, unsealed session job of this user's server."""
    problems = contract.job_of_server_problems(ad, user, key)
    if ad.get(ATTRS.session) is not True:
        problems.append("it is not a session job")
    if ad.get(ATTRS.sealed) is not None:
        problems.append("it is sealed already")
    if ad.get("JobStatus") != HELD or ad.get("HoldReasonCode") != SUBMITTED_ON_HOLD:
        problems.append("it is not held as submitted")
    if problems:
        raise SealError("; ".join(problems))


def parse_args(args: list[str]) -> tuple[str, str, int]:
    if len(args) != 3:
        raise SealError("usage: condorlab-seal USER SERVER_KEY CLUSTER")
    user, key, cluster = args
    try:
        contract.check_user_name(user)
        contract.check_server_key(key)
    except ContractError as exc:
        raise SealError(str(exc)) from None
    if not cluster.isdigit() or len(cluster) > 12:
        raise SealError(f"bad job id {cluster[:20]!r}")
    return user, key, int(cluster)


def seal(schedd, user: str, key: str, cluster: int) -> dict:
    """Seal and release the job, removing older sealed jobs of the same server; returns what was done."""
    import htcondor

    projection = ["ClusterId", "ProcId", "Owner", "JobStatus", "HoldReasonCode", *ATTRS.names(), ATTRS.sealed]
    ads = [dict(ad) for ad in schedd.query(constraint=f"ClusterId == {cluster}", projection=projection)]
    if len(ads) != 1:
        raise SealError(f"job {cluster} is not one queued job ({len(ads)} found)")
    check_job(ads[0], user, key)
    server = json.dumps(f"{user}/{key}")
    # Still queued (not removed, not completed): it holds or may take a slot.
    older = (
        f"{ATTRS.sealed} =?= true && {ATTRS.server} =?= {server} && Owner == {json.dumps(user)} "
        f"&& ClusterId != {cluster} && JobStatus != 3 && JobStatus != 4"
    )
    stale = [int(ad["ClusterId"]) for ad in schedd.query(constraint=older, projection=["ClusterId"])]
    if stale:
        schedd.act(htcondor.JobAction.Remove, older, reason="condorlab: a newer session job of the same server")
    mine = f"ClusterId == {cluster} && Owner == {json.dumps(user)}"
    schedd.edit(mine, ATTRS.sealed, "true")
    schedd.act(htcondor.JobAction.Release, mine)
    schedd.reschedule()
    return {"sealed": cluster, "removed": stale}


def main() -> None:
    if os.getuid() != 0:
        print("condorlab-seal: must run as root (the hub runs it through sudo)", file=sys.stderr)
        sys.exit(2)
    try:
        user, key, cluster = parse_args(sys.argv[1:])
        import htcondor

        result = seal(htcondor.Schedd(), user, key, cluster)
    except SealError as exc:
        print(f"condorlab-seal: {exc}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
