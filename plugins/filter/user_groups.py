# Copyright: condorlab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that turn the inventory's user groups into what the hub, the job
helper and HTCondor need: resource units, profiles, accounting map lines and
group quotas, and the checks that refuse a malformed group before any host
changes."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display

# The session contract of the hub package (hub/condorlab/contract.py): the
# same memory units, user, group and profile name rules and job attribute names
# as the hub and the job helper use.
_HUB = str(Path(__file__).resolve().parents[2] / "hub")
if _HUB not in sys.path:
    sys.path.insert(0, _HUB)
from condorlab import contract, membership  # noqa: E402

DOCUMENTATION = r"""
name: condorlab_user_groups
short_description: Filters for condorlab's user groups (condorlab_user_groups)
description:
  - C(condorlab_memory_mb) turns a memory size (C(2GB), C(512M), C(1.5 GiB), or
    a number of MB) into whole MiB, as HTCondor counts them.
  - C(condorlab_walltime_seconds) turns a duration (C(4h), C(1h30m), C(2d),
    C(90s), C(01:30:00) or a number of seconds) into seconds.
  - C(condorlab_profiles) turns the user groups into the normalised form
    (numbers instead of units, labels and accounting groups filled in) that
    playbooks/vars/site.yml makes once and every role, the hub and the job
    helper read; the filters below take that form.
  - C(condorlab_accounting_map_lines) turns the normalised groups and the members of
    their Unix groups into lines of an HTCondor map file (C(* user group[,group])),
    for the access point's AssignAccountingGroup transform;
    C(condorlab_accounting_map_text) the whole file, byte for byte as the
    access point's condorlab-membership timer writes it.
  - C(condorlab_group_quota_knobs) turns the normalised groups into the central
    manager's C(GROUP_NAMES), C(GROUP_QUOTA_*), C(GROUP_QUOTA_DYNAMIC_*) and
    C(GROUP_ACCEPT_SURPLUS_*) knobs.
  - C(condorlab_user_groups_errors) lists what is wrong with the user groups,
    each message naming the group, the field, the bad value and the fix.
  - C(condorlab_contract) gives a fact of the hub's session contract by name
    (C(job_attrs), C(session_attr), C(walltime_attr), C(fallback_attr) - the session jobs' attributes;
    C(sealed_attr) - the seal the hub alone sets on its session jobs;
    C(user_groups_file) - where the normalised groups go; C(share_slot_attr),
    C(share_negotiator) - the interactive share's slot attribute and negotiator;
    C(memory_hold_subcode) - the hold subcode of a session over its memory;
    C(accounting_map) - the access point's map of users to accounting groups;
    C(hub_settings_file) - the hub's settings file; C(token_lifetimes) - a lab token's shortest and longest lifetime).
positional: _input
options:
  _input:
    description: The value to convert, or the list of user groups.
    required: true
"""

EXAMPLES = r"""
- ansible.builtin.debug:
    msg: "{{ '2GB' | condorlab_memory_mb }} MiB for {{ '1h30m' | condorlab_walltime_seconds }} s"
  # 2048 MiB for 5400 s
- ansible.builtin.debug:
    msg: "{{ condorlab_user_groups | condorlab_accounting_map_lines({'physics': ['alice', 'bob']}) }}"
  # ['* alice group_physics', '* bob group_physics']
"""

RETURN = r"""
_value:
  description: An integer, a list of map lines, a dict of knobs, normalised groups, or a list of problems.
"""

UNIX_GROUP = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\$?$")
ACCOUNTING_GROUP = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
DURATION_PART = re.compile(r"([0-9]+)\s*([dhms])", re.IGNORECASE)
CLOCK = re.compile(r"^([0-9]+):([0-5][0-9])(?::([0-5][0-9]))?$")
DURATION_FACTORS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
GROUP_KEYS = {"name", "unix_groups", "accounting_group", "quota", "accept_surplus", "idle_timeout", "profiles"}
PROFILE_KEYS = {"name", "label", "cpus", "memory", "gpus", "walltime", "requirements", "fallback"}
PLACEHOLDERS = re.compile(r"^(changeme|change-me|todo|xxx+|placeholder|example)$", re.IGNORECASE)


def condorlab_memory_mb(value) -> int:
    """Memory in whole MiB: '2GB' -> 2048, '512M' -> 512, 1024 -> 1024."""
    try:
        megabytes = contract.memory_mb(value)
    except contract.ContractError:
        raise AnsibleFilterError(
            f"condorlab_memory_mb: {value!r} is not a memory size; write e.g. 2GB or 512MB"
        ) from None
    if megabytes < 1:
        raise AnsibleFilterError(f"condorlab_memory_mb: {value!r} is less than 1 MB")
    return megabytes


def condorlab_walltime_seconds(value) -> int:
    """A duration in seconds: '4h' -> 14400, '1h30m' -> 5400, '01:30:00' -> 5400, 600 -> 600."""
    problem = f"condorlab_walltime_seconds: {value!r} is not a duration; write e.g. 4h, 1h30m, 2d or 01:30:00"
    if isinstance(value, bool):
        raise AnsibleFilterError(problem)
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        text = value.strip()
        clock = CLOCK.match(text)
        if text.isdigit():
            seconds = int(text)
        elif clock:
            hours, minutes, secs = clock.groups()
            seconds = int(hours) * 3600 + int(minutes) * 60 + int(secs or 0)
        elif DURATION_PART.sub("", text).strip() == "" and DURATION_PART.search(text):
            units = [unit.lower() for _, unit in DURATION_PART.findall(text)]
            if len(set(units)) != len(units):
                raise AnsibleFilterError(problem)
            seconds = sum(int(n) * DURATION_FACTORS[u.lower()] for n, u in DURATION_PART.findall(text))
        else:
            raise AnsibleFilterError(problem)
    else:
        raise AnsibleFilterError(problem)
    if seconds < 60:
        raise AnsibleFilterError(f"condorlab_walltime_seconds: {value!r} is shorter than a minute")
    return seconds


def _accounting_group(group: dict) -> str:
    return group.get("accounting_group") or f"group_{group['name'].replace('-', '_')}"


def _label(profile: dict, memory_mb: int, seconds: int) -> str:
    memory = f"{memory_mb // 1024} GB" if memory_mb % 1024 == 0 else f"{memory_mb} MB"
    hours = f"{seconds // 3600} h" if seconds % 3600 == 0 else f"{seconds // 60} min"
    gpus = f", {profile.get('gpus')} GPU" if profile.get("gpus") else ""
    cpus = profile["cpus"]
    return f"{profile['name']}: {cpus} CPU{'s' if cpus != 1 else ''}, {memory}{gpus}, up to {hours}"


def _idle_timeout(group) -> int:
    """Seconds without activity after which a session of the group is ended; 0: never."""
    value = group.get("idle_timeout", contract.DEFAULT_IDLE_TIMEOUT)
    return 0 if value in (0, "0") else condorlab_walltime_seconds(value)


def condorlab_profiles(groups) -> list[dict]:
    """The user groups with numbers instead of units, for the hub and the job helper."""
    problems = condorlab_user_groups_errors(groups)
    if problems:
        raise AnsibleFilterError("condorlab_profiles: " + "; ".join(problems))
    result = []
    for group in groups:
        profiles = []
        for profile in group["profiles"]:
            memory_mb = condorlab_memory_mb(profile["memory"])
            seconds = condorlab_walltime_seconds(profile["walltime"])
            profiles.append(
                {
                    "name": profile["name"],
                    "label": profile.get("label") or _label(profile, memory_mb, seconds),
                    "cpus": int(profile["cpus"]),
                    "memory_mb": memory_mb,
                    "gpus": int(profile.get("gpus") or 0),
                    "walltime": seconds,
                    "requirements": profile.get("requirements") or "",
                    "fallback": bool(profile.get("fallback", False)),
                }
            )
        result.append(
            {
                "name": group["name"],
                "unix_groups": list(group["unix_groups"]),
                "accounting_group": _accounting_group(group),
                "quota": dict(group.get("quota") or {}),
                "accept_surplus": bool(group.get("accept_surplus", True)),
                "idle_timeout": _idle_timeout(group),
                "profiles": profiles,
            }
        )
    return result


def _members(entry, passwd: dict) -> list:
    """A group's members: a list of names, or a getent row [password, gid, "a,b"] (None: no such group).

    With passwd (getent rows [password, uid, gid, ...] by user), users whose
    primary group it is count too, as getgrouplist() sees them.
    """
    if not entry:
        return []
    if isinstance(entry, (list, tuple)) and len(entry) == 3 and isinstance(entry[2], str):
        names = [name for name in entry[2].split(",") if name]
        gid = str(entry[1])
        names += sorted(user for user, row in passwd.items() if row and len(row) > 2 and str(row[2]) == gid)
        return names
    return list(entry)


def _accounting(profiles, members, passwd, name: str) -> dict:
    if not isinstance(members, dict):
        raise AnsibleFilterError(f"{name}: members must map Unix groups to users, not {members!r}")
    resolved = {unix_group: _members(entry, passwd or {}) for unix_group, entry in members.items()}
    allowed, skipped = membership.accounting(profiles, resolved)
    for member in skipped:
        if member.invalid:
            raise AnsibleFilterError(
                f"{name}: member {member.user!r} of Unix group {member.unix_group} is not a Unix user name"
            )
        # A directory may hold it (Admin, host$); it cannot log in to the hub.
        Display().warning(
            f"condorlab: {member.user!r} (Unix group {member.unix_group}) gets no accounting group: {member.why}"
        )
    return allowed


def condorlab_accounting_map_lines(profiles, members, passwd=None) -> list[str]:
    """HTCondor map lines '* <user> <group>[,<group>...]' from the normalised user groups (condorlab_profiles):
    the groups each user may use, the default first."""
    return membership.map_lines(_accounting(profiles, members, passwd, "condorlab_accounting_map_lines"))


def condorlab_accounting_map_text(profiles, members, passwd=None) -> str:
    """The whole map file, as condorlab-membership writes it on the access point."""
    return membership.map_text(_accounting(profiles, members, passwd, "condorlab_accounting_map_text"))


def condorlab_group_quota_knobs(profiles) -> dict:
    """The central manager's group knobs from the normalised user groups: GROUP_NAMES, each group's quota and
    surplus policy."""
    knobs: dict = {"GROUP_NAMES": [g["accounting_group"] for g in profiles]}
    for group in profiles:
        name = group["accounting_group"]
        quota = group["quota"]
        if "static" in quota:
            knobs[f"GROUP_QUOTA_{name}"] = int(quota["static"])
        if "dynamic" in quota:
            knobs[f"GROUP_QUOTA_DYNAMIC_{name}"] = float(quota["dynamic"])
        knobs[f"GROUP_ACCEPT_SURPLUS_{name}"] = group["accept_surplus"]
    if not knobs["GROUP_NAMES"]:
        knobs["GROUP_NAMES"] = None
    return knobs


def _int_at_least(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _profile_errors(where: str, profile, seen: set, node: dict) -> list[str]:
    if not isinstance(profile, dict):
        return [f"{where} is {profile!r}, not a mapping with name, cpus, memory and walltime"]
    problems = []
    unknown = sorted(set(profile) - PROFILE_KEYS)
    if unknown:
        problems.append(f"{where} has unknown fields {unknown}; a profile has {sorted(PROFILE_KEYS)}")
    name = profile.get("name")
    if not isinstance(name, str) or not contract.PROFILE_NAME.fullmatch(name):
        problems.append(f"{where}.name is {name!r}; use lower-case letters, digits, '-' and '_' (e.g. small)")
    elif name in seen:
        problems.append(f"{where}.name {name!r} appears twice in the group; give each profile its own name")
    else:
        seen.add(name)
    where = f"{where} ({name})" if isinstance(name, str) else where
    cpus = profile.get("cpus")
    if not _int_at_least(cpus, 1):
        problems.append(f"{where}: cpus is {cpus!r}; give a whole number of CPUs, at least 1")
    elif node.get("cpus") and cpus > int(node["cpus"]):
        problems.append(
            f"{where}: cpus is {cpus} but an execute node has {node['cpus']} (condorlab_execute_node_size); "
            "no node could run it"
        )
    memory_mb = None
    try:
        memory_mb = condorlab_memory_mb(profile.get("memory"))
    except AnsibleFilterError:
        problems.append(f"{where}: memory is {profile.get('memory')!r}; write a size such as 2GB or 512MB")
    if memory_mb and node.get("memory"):
        limit = condorlab_memory_mb(node["memory"])
        if memory_mb > limit:
            problems.append(
                f"{where}: memory is {profile['memory']} but an execute node has {node['memory']} "
                "(condorlab_execute_node_size); no node could run it"
            )
    gpus = profile.get("gpus", 0)
    if not _int_at_least(gpus, 0):
        problems.append(f"{where}: gpus is {gpus!r}; give a whole number, 0 or more")
    elif gpus > int(node.get("gpus", gpus) or 0):
        problems.append(
            f"{where}: gpus is {gpus} but an execute node has {node.get('gpus', 0)} (condorlab_execute_node_size)"
        )
    try:
        condorlab_walltime_seconds(profile.get("walltime"))
    except AnsibleFilterError:
        problems.append(
            f"{where}: walltime is {profile.get('walltime')!r}; write a duration of a minute or more, e.g. 4h or 1h30m"
        )
    requirements = profile.get("requirements", "")
    if not isinstance(requirements, str) or "\n" in requirements or "\r" in requirements:
        problems.append(f"{where}: requirements must be one line of ClassAd expression, not {requirements!r}")
    if not isinstance(profile.get("fallback", False), bool):
        problems.append(
            f"{where}: fallback is {profile['fallback']!r}; give true (may start in an ordinary batch slot when "
            "the interactive share is full) or false"
        )
    label = profile.get("label", "")
    if not isinstance(label, str) or len(label) > 120 or "<" in label or ">" in label:
        problems.append(f"{where}: label must be text of at most 120 characters without < or >, not {label!r}")
    return problems


def _quota_errors(where: str, quota) -> list[str]:
    if quota is None:
        return []
    if not isinstance(quota, dict) or len(quota) != 1 or not set(quota) <= {"static", "dynamic"}:
        return [f"{where}.quota is {quota!r}; give either {{static: <slots>}} or {{dynamic: <fraction of the pool>}}"]
    if "static" in quota and not _int_at_least(quota["static"], 1):
        return [f"{where}.quota.static is {quota['static']!r}; give a whole number of CPUs, at least 1"]
    if "dynamic" in quota:
        value = quota["dynamic"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            return [f"{where}.quota.dynamic is {value!r}; give a fraction of the pool above 0 and at most 1 (e.g. 0.4)"]
    return []


def condorlab_user_groups_errors(groups, node_size=None) -> list[str]:
    """Everything wrong with condorlab_user_groups, one message each."""
    var = "condorlab_user_groups"
    if not isinstance(groups, list):
        return [f"{var} must be a list of user groups, not {type(groups).__name__}"]
    if not groups:
        return [f"{var} is empty; define at least one user group with its Unix groups and profiles"]
    node = node_size if isinstance(node_size, dict) else {}
    problems: list[str] = []
    names: set = set()
    accounting: dict[str, str] = {}
    dynamic_total = 0.0
    for index, group in enumerate(groups):
        where = f"{var}[{index}]"
        if not isinstance(group, dict):
            problems.append(f"{where} is {group!r}, not a mapping with name, unix_groups and profiles")
            continue
        name = group.get("name")
        if not isinstance(name, str) or not contract.GROUP_NAME.fullmatch(name):
            problems.append(
                f"{where}.name is {name!r}; use lower-case letters, digits, '-' and '_', starting with a letter"
            )
        elif PLACEHOLDERS.match(name):
            problems.append(f"{where}.name is the placeholder {name!r}; name the group")
        elif name in names:
            problems.append(f"{where}.name {name!r} is used by another group; group names must be unique")
        else:
            names.add(name)
        where = f"{var}[{index}] ({name})" if isinstance(name, str) else where
        unknown = sorted(set(group) - GROUP_KEYS)
        if unknown:
            problems.append(f"{where} has unknown fields {unknown}; a group has {sorted(GROUP_KEYS)}")
        unix_groups = group.get("unix_groups")
        if not isinstance(unix_groups, list) or not unix_groups:
            problems.append(f"{where}: unix_groups is {unix_groups!r}; list the Unix groups whose members belong")
        else:
            for unix_group in unix_groups:
                if not isinstance(unix_group, str) or not UNIX_GROUP.match(unix_group):
                    problems.append(f"{where}: unix_groups has {unix_group!r}, which is not a Unix group name")
        if isinstance(name, str):
            account = group.get("accounting_group")
            if account is not None and (not isinstance(account, str) or not ACCOUNTING_GROUP.match(account)):
                problems.append(
                    f"{where}: accounting_group is {account!r}; HTCondor group names are letters, digits and '_' "
                    "(no dots: sub-groups are not used), e.g. group_physics"
                )
            elif contract.GROUP_NAME.fullmatch(name):
                account = _accounting_group(group)
                if account in accounting:
                    problems.append(
                        f"{where}: accounting_group {account} is also the group of {accounting[account]}; "
                        "each user group needs its own HTCondor accounting group"
                    )
                accounting[account] = name
        quota_problems = _quota_errors(where, group.get("quota"))
        problems.extend(quota_problems)
        if not quota_problems and isinstance(group.get("quota"), dict) and "dynamic" in group["quota"]:
            dynamic_total += float(group["quota"]["dynamic"])
        try:
            idle = _idle_timeout(group)
        except AnsibleFilterError:
            idle = -1
        if idle != 0 and idle < 60:
            problems.append(
                f"{where}: idle_timeout is {group.get('idle_timeout')!r}; give a duration of a minute or more "
                "(e.g. 2h), or 0 to never end idle sessions"
            )
        surplus = group.get("accept_surplus", True)
        if not isinstance(surplus, bool):
            problems.append(f"{where}: accept_surplus is {surplus!r}; give true or false")
        profiles = group.get("profiles")
        if not isinstance(profiles, list) or not profiles:
            problems.append(f"{where}: profiles is {profiles!r}; give the group at least one profile")
            continue
        seen: set = set()
        for number, profile in enumerate(profiles):
            problems.extend(_profile_errors(f"{where}.profiles[{number}]", profile, seen, node))
    if dynamic_total > 1.0 + 1e-9:
        problems.append(
            f"{var}: the dynamic quotas add up to {dynamic_total:g}, more than the whole pool (1); lower them"
        )
    return problems


def condorlab_contract(name: str):
    """A fact of the session contract, for roles (see DOCUMENTATION)."""
    facts = {
        "job_attrs": contract.ATTRS.names(),
        "user_groups_file": contract.USER_GROUPS_FILE,
        "share_slot_attr": contract.SHARE_SLOT_ATTR,
        "share_negotiator": contract.SHARE_NEGOTIATOR,
        "session_attr": contract.ATTRS.session,
        "walltime_attr": contract.ATTRS.walltime,
        "fallback_attr": contract.ATTRS.fallback,
        "sealed_attr": contract.ATTRS.sealed,
        "memory_hold_subcode": contract.MEMORY_HOLD_SUBCODE,
        "accounting_map": membership.ACCOUNTING_MAP,
        "hub_settings_file": contract.HUB_SETTINGS_FILE,
        "token_lifetimes": [contract.TOKEN_LIFETIME_MIN, contract.TOKEN_LIFETIME_MAX],
    }
    if name not in facts:
        raise AnsibleFilterError(f"condorlab_contract: {name!r} is not one of {sorted(facts)}")
    return facts[name]


class FilterModule:
    def filters(self):
        return {
            "condorlab_memory_mb": condorlab_memory_mb,
            "condorlab_walltime_seconds": condorlab_walltime_seconds,
            "condorlab_profiles": condorlab_profiles,
            "condorlab_accounting_map_lines": condorlab_accounting_map_lines,
            "condorlab_accounting_map_text": condorlab_accounting_map_text,
            "condorlab_group_quota_knobs": condorlab_group_quota_knobs,
            "condorlab_user_groups_errors": condorlab_user_groups_errors,
            "condorlab_contract": condorlab_contract,
        }
