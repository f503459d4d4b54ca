# Copyright: condorlab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Inventory-wide checks that the preflight role runs before any host changes."""

from __future__ import annotations

import base64
import binascii
import re
import sys
from pathlib import Path

from ansible.errors import AnsibleFilterError

# Local user names follow the hub's user name rule (hub/condorlab/contract.py).
if str(Path(__file__).resolve().parents[2] / "hub") not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hub"))
from condorlab.contract import USER_NAME

DOCUMENTATION = r"""
name: condorlab_inventory_errors
short_description: List what is wrong with a condorlab inventory or a role's settings
description:
  - Three checks that return one message per problem, naming the variable,
    the bad value and the fix; an empty list means all is well.
  - C(condorlab_inventory_errors(groups)) checks the inventory groups.
  - C(htcondor_settings_errors(settings, groups)) checks one host's HTCondor
    settings (keys C(manage_pool), C(central_manager), C(trust_domain),
    C(uid_domain), C(signing_key_b64)).
  - C(local_users_errors(settings)) checks C(local_users_accounts) and
    C(local_users_groups) (keys of the same names).
  - C(directory_errors(settings)) checks the directory role's settings (keys
    C(base_dn), C(reader_dn), C(users), C(groups)).
positional: _input
options:
  _input:
    description: The inventory's C(groups), or the settings mapping.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Refuse a broken inventory
  ansible.builtin.assert:
    that: problems | length == 0
    fail_msg: "{{ problems | join('\\n') }}"
  vars:
    problems: "{{ groups | condorlab_inventory_errors }}"
"""

RETURN = r"""
_value:
  description: One message per problem; empty when all is well.
  type: list
  elements: str
"""

DOMAIN = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
UNIX_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# Values people leave in an inventory instead of a key: refused when they are
# the whole value, or (for the long words, which random base64 practically
# never contains) a part of it.
PLACEHOLDERS = ("secret", "password", "todo", "xxx", "key", "none", "null")
PLACEHOLDER_WORDS = ("changeme", "change-me", "change_me", "replaceme", "replace-me", "replace_me", "placeholder")
MIN_KEY_BYTES = 16


def _check_types(name: str, *values) -> None:
    if not all(isinstance(v, dict) for v in values):
        raise AnsibleFilterError(f"{name}: expected a mapping, got {', '.join(type(v).__name__ for v in values)}")


def condorlab_inventory_errors(hosts, group_of) -> list[str]:
    """The site's parts that need hosts: ``hosts`` is condorlab_hosts, ``group_of`` names each part's
    inventory group (condorlab_host_groups, playbooks/vars/layout.yml)."""
    _check_types("condorlab_inventory_errors", hosts, group_of)
    errors = []
    if not hosts.get("execute_nodes"):
        errors.append(
            f"inventory group {group_of['execute_nodes']} is empty; add the execute nodes that will run sessions"
        )
    hubs = list(hosts.get("access_points", []))
    if len(hubs) != 1:
        errors.append(
            f"inventory group {group_of['access_points']} has {len(hubs)} hosts ({', '.join(hubs) or 'none'}); "
            "put exactly one host (the hub and access point) in it"
        )
    return errors


def _domain_errors(settings: dict) -> list[str]:
    errors = []
    for var in ("central_manager", "trust_domain", "uid_domain"):
        value = settings.get(var)
        if not isinstance(value, str) or not DOMAIN.fullmatch(value):
            errors.append(
                f"htcondor_{var} is {value!r}; set it to a host or domain name (letters, digits, '-' and '.')"
            )
    return errors


def _key_errors(settings: dict) -> list[str]:
    key = settings.get("signing_key_b64") or ""
    if not key:
        if not settings.get("manage_pool", True):
            return [
                "htcondor_signing_key_b64 is empty but htcondor_manage_pool is false; put the existing pool's "
                "signing key (base64 of /etc/condor/passwords.d/POOL) in Ansible Vault under that name"
            ]
        return []
    lowered = key.strip().lower()
    if lowered in PLACEHOLDERS or any(word in lowered for word in PLACEHOLDER_WORDS):
        return [
            "htcondor_signing_key_b64 holds a placeholder, not a key; store the real key in Ansible Vault "
            "or leave it empty to generate one on the central manager"
        ]
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return ["htcondor_signing_key_b64 is not valid base64; encode the key file with `base64 -w0`"]
    if len(raw) < MIN_KEY_BYTES:
        return [
            f"htcondor_signing_key_b64 decodes to {len(raw)} bytes; a signing key needs at least "
            f"{MIN_KEY_BYTES} (generate one with condor_store_cred add -c)"
        ]
    return []


def _named_id_errors(var: str, entries: list, id_key: str, kind: str) -> tuple[list[str], dict[int, str]]:
    """Check a list of {name, <id_key>} entries; return the errors and the ids seen (id -> name)."""
    errors = []
    names = set()
    seen: dict[int, str] = {}
    for index, entry in enumerate(entries or []):
        name, number = entry.get("name"), entry.get(id_key)
        rule = USER_NAME if kind == "login" else UNIX_NAME
        if not isinstance(name, str) or not rule.fullmatch(name):
            errors.append(f"{var}[{index}].name is {name!r}; use a lower-case Unix {kind} name")
        elif name in names:
            errors.append(f"{var}[{index}].name {name!r} is listed twice; keep one entry")
        names.add(name)
        if not isinstance(number, int) or number < 1000:
            errors.append(f"{var}[{index}].{id_key} is {number!r}; use a number of 1000 or more")
        elif number in seen:
            errors.append(f"{var}[{index}].{id_key} {number} is also the {id_key} of {seen[number]}; make it unique")
        else:
            seen[number] = str(name)
    return errors, seen


def _accounts_errors(users_var: str, groups_var: str, users, groups) -> list[str]:
    users = users or []
    group_errors, group_gids = _named_id_errors(groups_var, groups, "gid", "group")
    user_errors, _ = _named_id_errors(users_var, users, "uid", "login")
    # Each user also gets a group of its own, with gid (default: the uid).
    own_errors = []
    own_gids: dict[int, str] = {}
    for index, user in enumerate(users):
        name, own_gid = user.get("name"), user.get("gid", user.get("uid"))
        if not isinstance(own_gid, int):
            continue
        clash = group_gids.get(own_gid)
        if clash is None and "gid" in user and own_gid in own_gids:
            clash = f"the own group of {own_gids[own_gid]}"
        if clash is not None:
            own_errors.append(
                f"{users_var}[{index}] ({name}) gets its own group with gid {own_gid}, which is the gid "
                f"of {clash}; set {users_var}[{index}].gid to a free gid"
            )
        else:
            own_gids.setdefault(own_gid, str(name))
    return group_errors + user_errors + own_errors


def local_users_errors(settings) -> list[str]:
    _check_types("local_users_errors", settings)
    return _accounts_errors(
        "local_users_accounts",
        "local_users_groups",
        settings.get("local_users_accounts"),
        settings.get("local_users_groups"),
    )


BASE_DN = re.compile(r"^dc=[a-z0-9]([a-z0-9-]*[a-z0-9])?(,dc=[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


def directory_errors(settings) -> list[str]:
    """The directory role's settings: the base DN, the reader, the users and groups it keeps."""
    _check_types("directory_errors", settings)
    errors = []
    base = settings.get("base_dn")
    if not isinstance(base, str) or not BASE_DN.match(base):
        errors.append(
            f"condorlab_directory_base_dn is {base!r}; set it to the directory's naming context in dc= parts only, "
            "e.g. dc=example,dc=org"
        )
    reader = settings.get("reader_dn")
    if isinstance(base, str) and base and (not isinstance(reader, str) or not reader.endswith("," + base)):
        errors.append(f"condorlab_directory_reader_dn is {reader!r}; put the reader account under {base}")
    users = settings.get("users") or []
    errors += _accounts_errors("directory_users", "directory_groups", users, settings.get("groups"))
    known = {group.get("name") for group in settings.get("groups") or [] if isinstance(group, dict)}
    for index, user in enumerate(users):
        if not isinstance(user, dict):
            continue
        for group in user.get("groups") or []:
            if group not in known:
                errors.append(
                    f"directory_users[{index}] ({user.get('name')}) is in group {group!r}, which is not in "
                    "directory_groups; add it there with its gid"
                )
    return errors


def htcondor_settings_errors(settings, hosts, group_of) -> list[str]:
    _check_types("htcondor_settings_errors", settings, hosts, group_of)
    errors = []
    cms = list(hosts.get("central_managers", []))
    if settings.get("manage_pool", True) and len(cms) != 1:
        errors.append(
            f"inventory group {group_of['central_managers']} has {len(cms)} hosts ({', '.join(cms) or 'none'}); "
            "put exactly one host in it, or set htcondor_manage_pool: false to use an existing pool"
        )
    return errors + _domain_errors(settings) + _key_errors(settings)


class FilterModule:
    def filters(self):
        return {
            "condorlab_inventory_errors": condorlab_inventory_errors,
            "htcondor_settings_errors": htcondor_settings_errors,
            "local_users_errors": local_users_errors,
            "directory_errors": directory_errors,
        }
