"""The session record: what the hub decided a user's session is, and what it learned since.

One record per server, made from a checked start request (profiles.resolve),
kept in JupyterHub's database through the spawner's get_state/load_state
under STATE_KEY, and read by every room of the spawner by field name. A record
of an older release (more or fewer keys) loads with what it has.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

# The key of the record in the spawner's state (JupyterHub's database).
STATE_KEY = "condorlab_session"
# The key of how the user's last session ended, kept across sessions.
LAST_END_KEY = "condorlab_last_end"
# The key of the lab's socket on its node (the tunnel transport), to open its tunnel again.
SOCKET_KEY = "condorlab_lab_socket"


@dataclass(frozen=True)
class Session:
    """A checked session: the user group's profile with the requests the user chose."""

    group: str
    profile: str = ""
    accounting_group: str = ""
    request_cpus: int = 0
    request_memory_mb: int = 0
    request_gpus: int = 0
    label: str = ""
    walltime: int = 0  # seconds, 0: none
    requirements: str = ""
    fallback: bool = False
    # Profile keys this release does not name; kept as they came.
    extra: dict = field(default_factory=dict)
    # Learned after the submission.
    cert_sha256: str = ""  # the pinned certificate of the session's lab
    started: float = 0.0  # time.time() when the lab answered as this session

    @classmethod
    def from_dict(cls, values: dict | None) -> Session | None:
        """The record of a dict (profiles.resolve's, or a stored state); None for an empty one."""
        if not values or not values.get("group"):
            return None
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in values.items() if k in names}
        extra = {**values.get("extra", {}), **{k: v for k, v in values.items() if k not in names and k != "extra"}}
        return cls(**known, extra=extra)

    def to_dict(self) -> dict:
        """The record as JSON-able values, for the hub's database."""
        return dataclasses.asdict(self)

    def request(self) -> dict:
        """The fields the job helper's submit request takes (contract.submit_request)."""
        return {
            "group": self.group,
            "profile": self.profile,
            "request_cpus": self.request_cpus,
            "request_memory_mb": self.request_memory_mb,
        }

    def accounting(self) -> dict:
        """The fields every accounting record of this session carries."""
        return {
            "group": self.group,
            "accounting_group": self.accounting_group,
            "profile": self.profile,
            "request_cpus": self.request_cpus,
            "request_memory_mb": self.request_memory_mb,
            "request_gpus": self.request_gpus,
            "walltime": self.walltime,
        }

    def with_certificate(self, sha256: str) -> Session:
        return dataclasses.replace(self, cert_sha256=sha256)

    def started_now(self) -> Session:
        return dataclasses.replace(self, started=time.time())

    def ends_at(self) -> float:
        """When the session reaches its walltime (0: it has not started, or has none)."""
        return self.started + self.walltime if self.started and self.walltime else 0.0


__all__ = ["LAST_END_KEY", "STATE_KEY", "Session"]
