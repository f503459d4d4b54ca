"""The profiles a user may start, from the inventory's user groups, and the checks on a start request.

The hub's configuration holds the user groups as the `condorlab_profiles`
filter normalises them: each with its Unix groups, its HTCondor accounting
group and its profiles (cpus, memory_mb, gpus, walltime in seconds, extra
requirements). A user belongs to a group through membership of one of its Unix
groups. A start request names a profile ("group/profile") and may ask for fewer
CPUs or less memory than the profile offers, never more.
"""

from __future__ import annotations

import grp
import html
import os
import pwd
import re

OPTION_KEYS = {"profile", "cpus", "memory"}
# At most 9 digits before and 3 after the point: a size, not a number to overflow on.
MEMORY = re.compile(r"^\s*([0-9]{1,9}(?:\.[0-9]{1,3})?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
CPUS = re.compile(r"^\s*[0-9]{1,6}\s*$")
MEMORY_FACTORS = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


class OptionsError(ValueError):
    """A start request the user's groups do not allow; the message says why and what is allowed."""


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


def choices(user_groups: list[dict], unix_groups: set[str]) -> list[tuple[dict, dict]]:
    """(group, profile) pairs the user may start, in inventory order."""
    return [
        (group, profile)
        for group in user_groups
        if unix_groups & set(group["unix_groups"])
        for profile in group["profiles"]
    ]


def key_of(group: dict, profile: dict) -> str:
    return f"{group['name']}/{profile['name']}"


def memory_mb(value) -> int:
    if isinstance(value, bool):
        raise OptionsError(f"memory {str(value)[:20]!r} is not a size; write e.g. 2GB or 512MB")
    if isinstance(value, int):
        return value
    match = MEMORY.match(str(value)[:64])
    if not match:
        raise OptionsError(f"memory {str(value)[:20]!r} is not a size; write e.g. 2GB or 512MB")
    return round(float(match.group(1)) * MEMORY_FACTORS[match.group(2).upper()])


def resolve(user_groups: list[dict], unix_groups: set[str], options: dict) -> dict:
    """The session a start request asks for, within the user's groups' limits, or OptionsError."""
    if not isinstance(options, dict):
        raise OptionsError("the start options must be a mapping")
    unknown = sorted(set(options) - OPTION_KEYS)
    if unknown:
        raise OptionsError(
            f"unknown start option(s) {', '.join(unknown)}; a session takes profile, cpus and memory "
            "(the accounting group follows from your user group)"
        )
    available = choices(user_groups, unix_groups)
    if not available:
        raise OptionsError("you belong to none of the user groups that may start sessions")
    wanted = options.get("profile") or key_of(*available[0])
    matching = [(g, p) for g, p in available if key_of(g, p) == wanted]
    if not matching:
        names = ", ".join(key_of(g, p) for g, p in available)
        raise OptionsError(f"profile {wanted!r} is not one of your groups' profiles ({names})")
    group, profile = matching[0]
    cpus = options.get("cpus")
    if cpus in (None, ""):
        cpus = profile["cpus"]
    if isinstance(cpus, bool) or not (isinstance(cpus, int) or (isinstance(cpus, str) and CPUS.match(cpus))):
        raise OptionsError(f"cpus {str(cpus)[:20]!r} is not a whole number of at most 6 digits")
    cpus = int(cpus)
    if not 1 <= cpus <= profile["cpus"]:
        raise OptionsError(f"cpus {cpus} is outside profile {wanted}'s limit of 1 to {profile['cpus']}")
    memory = options.get("memory")
    memory = profile["memory_mb"] if memory in (None, "") else memory_mb(memory)
    if not 1 <= memory <= profile["memory_mb"]:
        raise OptionsError(f"memory {memory} MB is above profile {wanted}'s limit of {profile['memory_mb']} MB")
    return {
        "group": group["name"],
        "profile": profile["name"],
        "accounting_group": group["accounting_group"],
        "request_cpus": cpus,
        "request_memory_mb": memory,
        "request_gpus": profile.get("gpus", 0),
        "walltime": profile["walltime"],
        "label": profile["label"],
    }


def form_html(available: list[tuple[dict, dict]]) -> str:
    """The options form: the user's profiles, and optional smaller CPU and memory requests."""
    if not available:
        return "<p>You belong to none of the user groups that may start sessions.</p>"
    options = "\n".join(
        f'<option value="{html.escape(key_of(g, p))}">{html.escape(g["name"])}: {html.escape(p["label"])}</option>'
        for g, p in available
    )
    return f"""
<div class="form-group">
  <label for="condorlab-profile">Profile</label>
  <select class="form-control" id="condorlab-profile" name="profile">
{options}
  </select>
</div>
<div class="form-group">
  <label for="condorlab-cpus">CPUs (optional, up to the profile's)</label>
  <input class="form-control" id="condorlab-cpus" name="cpus" type="number" min="1" placeholder="the profile's">
</div>
<div class="form-group">
  <label for="condorlab-memory">Memory (optional, up to the profile's, e.g. 1GB)</label>
  <input class="form-control" id="condorlab-memory" name="memory" type="text" placeholder="the profile's">
</div>
"""
