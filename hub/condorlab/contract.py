"""The session contract: what the hub, the job helper and the inventory agree on.

One module, standard library only, read by three parties:

- the hub (spawner.py, profiles.py, jobs.py, accounting.py), which offers and
  checks a user's start request;
- the job helper (helper.py), which the hub runs as the user through sudo and
  which checks every request again with the same functions, on its side of the
  privilege boundary;
- the inventory's filter plugins (plugins/filter/user_groups.py), which load
  this file to normalise condorlab_user_groups into USER_GROUPS_FILE, to write
  the access point's accounting map with the same user name rule, and to name
  the job attributes HTCondor protects.

What is agreed:

- USER_GROUPS_FILE: the user groups as the filter normalises them -- a JSON
  list of groups {name, unix_groups, accounting_group, profiles}, each profile
  {name, label, cpus, memory_mb, gpus, walltime (seconds), requirements, ...}.
  Integers only: nobody after the filter parses a unit. A profile field the
  filter adds reaches the submit template as ``session.<field>`` unchanged.
- The name rules for users (USER_NAME, dots allowed), user groups and
  profiles (GROUP_NAME, PROFILE_NAME) and servers (SERVER_NAME, server_key),
  the staged file names (STAGING, SESSION_FILE, SUMMARY_FILE, TLS_FILES,
  LOG_FILES) and the job attributes (JobAttrs).
- Messages quote at most QUOTE_MAX characters of what a request sent (quoted).
- Profile lookup and limits: find_profile, check_cpus, check_memory and
  session_values, which turn a request into what the template renders.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
from dataclasses import dataclass

# ---- files -------------------------------------------------------------------

# The user groups, normalised by the inventory's filter (root-owned, 0644).
USER_GROUPS_FILE = "/etc/condorlab/user-groups.json"
# The hub's settings (settings.py), written by the jupyterhub role, loaded by
# its static jupyterhub_config.py.
HUB_SETTINGS_FILE = "/etc/jupyterhub/condorlab-hub.json"
# The job helper's settings: the submit template, the session command, where the lab works.
HELPER_CONFIG = "/etc/condorlab/session-helper.json"

# A session's files, in ~/.condorlab/sessions/<server key>/ on the access point
# and under the same names in the job's sandbox.
STAGING = ".condorlab/sessions"
SESSION_FILE = "session.json"  # the lab's environment (with its API token) and work directory
SUMMARY_FILE = "session.summary"  # written by the job, sent back: host, port, times
TLS_FILES = {"keyfile": "session-tls.key", "certfile": "session-tls.crt", "cafile": "session-ca.crt"}
LOG_FILES = ("session.out", "session.err", "session.log")
# What is deleted once the session has ended: everything that holds a secret.
SECRET_FILES = (SESSION_FILE, *TLS_FILES.values())
MAX_FILE_SIZE = 65536


# A lab's own HTCondor token (the pool from the lab): an IDTOKEN of the user's
# own identity the job helper fetches from the access point's schedd (FS
# authentication, as the user), for READ and WRITE only and for at most
# TOKEN_LIFETIME_MAX seconds; the hub renews it into the running lab. The
# helper refuses lifetimes outside this range.
TOKEN_LIFETIME_MIN = 60
TOKEN_LIFETIME_MAX = 3600
TOKEN_AUTHZ = ("READ", "WRITE")
# An IDTOKEN is a JWT: three base64url parts.
TOKEN_FORM = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
TOKEN_SIZE_MAX = 4096


# The hold subcode the execute nodes give a session held for using more memory
# than it requested (HoldReasonCode 21, held by the startd's policy); HTCondor's
# own cgroup limit holds with HoldReasonCode 34 instead.
MEMORY_HOLD_SUBCODE = 102


@dataclass(frozen=True)
class JobAttrs:
    """The ClassAd attributes of a session job (set by the submit template, immutable on the access point)."""

    session: str = "CondorlabSession"  # true on every session job
    server: str = "CondorlabServer"  # "<user>/<server key>"
    group: str = "CondorlabGroup"  # the user group
    profile: str = "CondorlabProfile"  # the profile's name
    walltime: str = "CondorlabWalltime"  # the profile's walltime, seconds
    fallback: str = "CondorlabFallback"  # true: the profile lets it take a batch slot when the share is full
    # true on a session job the hub sealed (seal.py): the access point deletes it
    # from every submitted job and only a queue super user may set it, so no
    # submitter can forge it. The share, the sweep and the metrics trust only this.
    sealed: str = "CondorlabSealed"

    def names(self) -> list[str]:
        """The attributes the job helper sets at submission (immutable afterwards); not the seal."""
        return [self.session, self.server, self.group, self.profile, self.walltime, self.fallback]


ATTRS = JobAttrs()

# The machine attribute that marks a slot of the interactive share (true on the
# share's partitionable slot and the slots it splits off): the startds set it,
# the negotiators select by it, the hub counts free share slots by it.
SHARE_SLOT_ATTR = "CondorlabInteractive"
# The interactive negotiator's local name on the central manager; the collector
# lists it as <this>@<central manager>.
SHARE_NEGOTIATOR = "NEGOTIATOR_INTERACTIVE"

# A session without activity this long (seconds) is ended by the group's idle
# culler, unless the group sets its own idle_timeout (0: never).
DEFAULT_IDLE_TIMEOUT = 7200


def idle_timeout(group: dict) -> int:
    """A normalised group's idle timeout in seconds (0: its sessions are never ended for idling)."""
    return int(group.get("idle_timeout", DEFAULT_IDLE_TIMEOUT) or 0)


# ---- names -------------------------------------------------------------------

# A Unix user name as the site's directory spells it: lower case (JupyterHub
# lowercases logins), letters, digits, '_', '-' and '.', starting with a letter
# or '_', at most 32 characters. Used by the accounting map, the spawner, the
# job helper and the OIDC username pattern.
USER_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
USER_NAME_RULE = "lower-case letters, digits, '_', '-' and '.', starting with a letter or '_', at most 32"
# A user group's name (its JupyterHub group, role and idle-culler service are
# named after it, so it ends with a letter or digit) and a profile's name; a
# start request names a profile as "group/profile". The inventory's filter
# refuses other names; the hub bounds a request's profile by them.
GROUP_NAME_MAX = 32
PROFILE_NAME_MAX = 32
GROUP_NAME = re.compile(rf"^[a-z](?:[a-z0-9_-]{{0,{GROUP_NAME_MAX - 2}}}[a-z0-9])?$")
PROFILE_NAME = re.compile(rf"^[a-z0-9][a-z0-9_-]{{0,{PROFILE_NAME_MAX - 1}}}$")
PROFILE_KEY_MAX = GROUP_NAME_MAX + 1 + PROFILE_NAME_MAX
# A named server's name (JupyterHub's named servers), and its staging key.
SERVER_NAME = re.compile(r"^[A-Za-z0-9._-]{1,58}$")
SERVER_KEY = re.compile(r"^(default|named-[A-Za-z0-9._-]{1,58})$")
# Names of environment variables the session may be given.
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A memory size as users and the inventory write it: 2GB, 512M, 1.5 GiB, 1024 (MB).
# At most 9 digits before and 3 after the point: a size, not a number to overflow on.
MEMORY = re.compile(r"^\s*([0-9]{1,9}(?:\.[0-9]{1,3})?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
MEMORY_FACTORS = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
WHOLE_NUMBER = re.compile(r"^\s*[0-9]{1,6}\s*$")


class ContractError(ValueError):
    """A request or a name outside the contract; the message says what is allowed."""


# A message quotes at most this many characters of a value a request sent: the
# hub returns, logs and shows its messages, so they stay short whatever came in.
QUOTE_MAX = 40


def quoted(value, limit: int = QUOTE_MAX) -> str:
    """A value for a message: text in quotes, a number as it is, cut to ``limit`` characters (with its length)."""
    try:
        text = value if isinstance(value, str) else str(value)
    except ValueError:  # an integer too long to print
        return f"a {type(value).__name__} too long to show"
    if len(text) <= limit:
        return repr(text) if isinstance(value, str) else text
    return f"{text[:limit]!r}... ({len(text)} characters)"


def is_user_name(name) -> bool:
    return isinstance(name, str) and bool(USER_NAME.fullmatch(name))


def check_user_name(name) -> str:
    if not is_user_name(name):
        raise ContractError(f"user name {quoted(name)} is not a Unix user name condorlab accepts ({USER_NAME_RULE})")
    return name


def job_of_server_problems(ad: dict, user: str, key: str) -> list[str]:
    """What makes a job ad not one of user's server key (its owner, the server it names): the root
    commands' shared check (seal.py, tunnel.py)."""
    problems = []
    if ad.get("Owner") != user:
        problems.append(f"its owner is {str(ad.get('Owner'))[:40]!r}, not {user!r}")
    if ad.get(ATTRS.server) != f"{user}/{key}":
        problems.append(f"it names server {str(ad.get(ATTRS.server))[:80]!r}, not {user}/{key}")
    return problems


def server_key(server_name: str) -> str:
    """The staging key of a server: "default", or "named-<name>" for a named server."""
    if not server_name:
        return "default"
    if not SERVER_NAME.fullmatch(server_name):
        raise ContractError(f"server name {quoted(server_name)} is not usable; use letters, digits, '.', '_' and '-'")
    return f"named-{server_name}"


def check_server_key(key) -> str:
    if not isinstance(key, str) or not SERVER_KEY.fullmatch(key):
        raise ContractError(f"bad server name {str(key)[:70]!r}")
    return key


def check_token_lifetime(value) -> int:
    """A token lifetime in seconds within the contract's range, else ContractError naming it."""
    text = str(value)
    if not text.isdigit() or not TOKEN_LIFETIME_MIN <= int(text) <= TOKEN_LIFETIME_MAX:
        raise ContractError(
            f"token lifetime {quoted(value)} must be whole seconds from {TOKEN_LIFETIME_MIN} to {TOKEN_LIFETIME_MAX}"
        )
    return int(text)


def staging_dir(key: str) -> str:
    """A session's staging directory, relative to the user's home."""
    return f"{STAGING}/{check_server_key(key)}"


# ---- units -------------------------------------------------------------------


def memory_mb(value, what: str = "memory") -> int:
    """Whole MiB from a size: '2GB' -> 2048, '512M' -> 512, 1024 -> 1024."""
    problem = f"{what} {str(value)[:20]!r} is not a size; write e.g. 2GB or 512MB"
    if isinstance(value, bool):
        raise ContractError(problem)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return round(value)
    match = MEMORY.match(str(value)[:64])
    if not match:
        raise ContractError(problem)
    return round(float(match.group(1)) * MEMORY_FACTORS[match.group(2).upper()])


# ---- user groups -------------------------------------------------------------

_loaded: dict[str, tuple[float, list]] = {}


def load_user_groups(path: str = USER_GROUPS_FILE) -> list[dict]:
    """The normalised user groups, re-read when the file changes (an inventory edit and a converge)."""
    mtime = os.stat(path).st_mtime
    cached = _loaded.get(path)
    if cached and cached[0] == mtime:
        return cached[1]
    with open(path) as handle:
        groups = json.load(handle)
    if not isinstance(groups, list) or not all(isinstance(g, dict) and "profiles" in g for g in groups):
        raise ContractError(f"{path} is not a list of user groups; re-run site.yml to write it")
    _loaded[path] = (mtime, groups)
    return groups


def unix_groups_of(username: str) -> set[str]:
    """Names of the Unix groups a user belongs to (primary and supplementary)."""
    entry = pwd.getpwnam(username)
    names = set()
    for gid in os.getgrouplist(username, entry.pw_gid):
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return names


def key_of(group: dict, profile: dict) -> str:
    return f"{group['name']}/{profile['name']}"


def choices(user_groups: list[dict], unix_groups: set[str]) -> list[tuple[dict, dict]]:
    """(group, profile) pairs the user may start, in inventory order."""
    return [
        (group, profile)
        for group in user_groups
        if unix_groups & set(group["unix_groups"])
        for profile in group["profiles"]
    ]


def find_profile(user_groups: list[dict], unix_groups: set[str], group_name, profile_name) -> tuple[dict, dict]:
    """The user group and profile a request names, if the user belongs to that group, or ContractError."""
    wanted = f"{group_name}/{profile_name}"
    available = choices(user_groups, unix_groups)
    for group, profile in available:
        if (group["name"], profile["name"]) == (group_name, profile_name):
            return group, profile
    if not available:
        raise ContractError("you belong to none of the user groups that may start sessions")
    named = [g for g in user_groups if g["name"] == group_name]
    if not named:
        reason = f"there is no user group {quoted(group_name)}"
    elif not unix_groups & set(named[0]["unix_groups"]):
        reason = f"you are not in the user group {quoted(group_name)} (Unix groups {named[0]['unix_groups']})"
    else:
        reason = f"the user group {quoted(group_name)} has no profile {quoted(profile_name)}"
    names = ", ".join(key_of(g, p) for g, p in available)
    raise ContractError(f"profile {quoted(wanted)} is not one of your groups' profiles ({names}): {reason}")


def check_cpus(value, profile: dict, where: str, field: str = "cpus") -> int:
    """A whole number of CPUs from 1 to the profile's."""
    if isinstance(value, str) and WHOLE_NUMBER.match(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(f"{field} {str(value)[:20]!r} is not a whole number of at most 6 digits")
    if not 1 <= value <= profile["cpus"]:
        raise ContractError(f"{field} {quoted(value)} is outside profile {where}'s limit of 1 to {profile['cpus']}")
    return value


def check_memory(value, profile: dict, where: str, field: str = "memory") -> int:
    """Memory in MiB from 1 to the profile's (an int is MiB; text may carry a unit)."""
    if isinstance(value, str):
        value = memory_mb(value, field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(f"{field} {str(value)[:20]!r} is not a size in MB")
    if value < 1:
        raise ContractError(f"{field} {quoted(value)} MB is less than 1 MB; ask for at most {profile['memory_mb']} MB")
    if value > profile["memory_mb"]:
        raise ContractError(f"{field} {quoted(value)} MB is above profile {where}'s limit of {profile['memory_mb']} MB")
    return value


# Profile fields the request may lower; every other profile field goes to the template as it is.
REQUESTED = {"cpus": "request_cpus", "memory_mb": "request_memory_mb"}


def session_values(group: dict, profile: dict, cpus: int, memory: int) -> dict:
    """What a checked start request renders into the submit template (and the hub records)."""
    fixed = {k: v for k, v in profile.items() if k not in ("name", "label", "gpus", *REQUESTED)}
    return {
        **fixed,
        "group": group["name"],
        "profile": profile["name"],
        "label": profile.get("label", profile["name"]),
        "accounting_group": group["accounting_group"],
        "request_cpus": cpus,
        "request_memory_mb": memory,
        "request_gpus": int(profile.get("gpus") or 0),
    }


# The hub's submit request to the job helper (JSON on its standard input).
REQUEST_FIELDS = ("server", "group", "profile", "request_cpus", "request_memory_mb", "env", "files", "avoid_nodes")

# Nodes a session must not go to (avoid_nodes: where the hub lost a session
# lately), each [host name as HTCondor's Machine attribute has it, when it was
# lost (epoch seconds)]: the session avoids the node until the collector has
# heard from it since then.
NODE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9_-]{0,62}))*$")
MAX_AVOID_NODES = 32


def is_node_name(name) -> bool:
    return isinstance(name, str) and len(name) <= 253 and bool(NODE_NAME.fullmatch(name))


def check_avoid_nodes(value) -> list[list]:
    """The avoid_nodes of a request: at most MAX_AVOID_NODES [host name, epoch seconds] pairs."""
    if not isinstance(value, list) or len(value) > MAX_AVOID_NODES:
        raise ContractError(f"avoid_nodes must be a list of at most {MAX_AVOID_NODES} [host name, time] pairs")
    checked = {}
    for item in value:
        if not (isinstance(item, list) and len(item) == 2):
            raise ContractError(f"avoid_nodes: {str(item)[:60]!r} is not a [host name, time] pair")
        node, since = item
        if not is_node_name(node):
            raise ContractError(f"avoid_nodes: {str(node)[:40]!r} is not a host name")
        if isinstance(since, bool) or not isinstance(since, int) or not 0 < since < 2**33:
            raise ContractError(f"avoid_nodes: the time for {node} must be whole seconds since 1970")
        checked[node] = max(since, checked.get(node, 0))
    return [[node, since] for node, since in sorted(checked.items())]


def submit_request(
    key: str, env: dict, session: dict, files: dict | None = None, avoid_nodes: list[list] | None = None
) -> dict:
    """The submit request for a checked session: names and numbers only; the helper looks up the rest."""
    request = {
        "server": key,
        "env": env,
        "group": session["group"],
        "profile": session["profile"],
        "request_cpus": session["request_cpus"],
        "request_memory_mb": session["request_memory_mb"],
    }
    if files:
        request["files"] = files
    if avoid_nodes:
        request["avoid_nodes"] = [list(pair) for pair in avoid_nodes]
    return request


def resolve(user_groups: list[dict], unix_groups: set[str], group_name, profile_name, cpus, memory) -> dict:
    """The checked session of a request; cpus and memory may be None (the profile's)."""
    group, profile = find_profile(user_groups, unix_groups, group_name, profile_name)
    where = key_of(group, profile)
    cpus = profile["cpus"] if cpus in (None, "") else check_cpus(cpus, profile, where)
    memory = profile["memory_mb"] if memory in (None, "") else check_memory(memory, profile, where)
    return session_values(group, profile, cpus, memory)
