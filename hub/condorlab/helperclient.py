"""The hub's side of the job helper and the seal: the only commands it may run as a user or as root.

The job helper (helper.py) submits, removes and cleans up a session's job as
the user, through sudo; the seal (seal.py) makes the job the helper submitted
on hold a session job, and the tunnel command (tunnel.py) opens and closes the
channel to its lab, as root. Both answer one JSON document on stdout; each
runs with a fixed PATH and nothing of the hub's environment.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from . import contract

SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class HelperClient:
    user: str
    job_helper: str
    job_seal: str
    job_tunnel: str = ""

    def helper_cmd(self, *args: str) -> list[str]:
        contract.check_user_name(self.user)
        return ["sudo", "-n", "-u", self.user, "--", self.job_helper, *args]

    def seal_cmd(self, server_key: str, cluster: str) -> list[str]:
        contract.check_user_name(self.user)
        return ["sudo", "-n", "--", self.job_seal, self.user, server_key, cluster]

    async def submit(self, request: dict) -> dict:
        return await self.helper("submit", stdin=json.dumps(request))

    async def remove(self, job_id: str) -> dict:
        return await self.helper("remove", job_id)

    async def clean(self, server_key: str) -> dict:
        return await self.helper("clean", server_key)

    async def token(self, lifetime: int) -> dict:
        """A fresh HTCondor token of the user's own for a lab (helper.py token): {"token", "lifetime"}."""
        return await self.helper("token", str(int(lifetime)))

    async def seal(self, server_key: str, cluster: str) -> dict:
        return await run_json(self.seal_cmd(server_key, cluster), "condorlab-seal")

    async def tunnel(self, verb: str, server_key: str, *args: str) -> dict:
        """Open or close the tunnel of this user's server (tunnel.py), as root."""
        contract.check_user_name(self.user)
        command = ["sudo", "-n", "--", self.job_tunnel, verb, self.user, server_key, *args]
        return await run_json(command, f"condorlab-tunnel {verb}")

    async def helper(self, *args: str, stdin: str | None = None) -> dict:
        return await run_json(self.helper_cmd(*args), f"condorlab-job {args[0]}", stdin)


async def run_json(command: list[str], what: str, stdin: str | None = None) -> dict:
    """Run a command, return its JSON answer; RuntimeError with its stderr when it fails."""
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": SAFE_PATH},
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {err.decode().strip()[:500]}")
    return json.loads(out)


__all__ = ["HelperClient", "run_json"]
