# Copyright: condorlab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Inventory-wide checks that the preflight role runs before any host changes."""

from __future__ import annotations

import base64
import binascii
import re

from ansible.errors import AnsibleFilterError

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


def condorlab_inventory_errors(groups) -> list[str]:
    _check_types("condorlab_inventory_errors", groups)
    errors = []
    if not groups.get("condor_execute"):
        errors.append("inventory group condor_execute is empty; add the execute nodes that will run sessions")
    hubs = list(groups.get("jupyterhub", []))
    if len(hubs) != 1:
        errors.append(
            f"inventory group jupyterhub has {len(hubs)} hosts ({', '.join(hubs) or 'none'}); "
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


def local_users_errors(settings) -> list[str]:
    _check_types("local_users_errors", settings)
    errors = []
    seen_gids: dict[int, str] = {}
    group_names = set()
    for index, group in enumerate(settings.get("local_users_groups") or []):
        name, gid = group.get("name"), group.get("gid")
        if not isinstance(name, str) or not UNIX_NAME.fullmatch(name):
            errors.append(f"local_users_groups[{index}].name is {name!r}; use a lower-case Unix group name")
        elif name in group_names:
            errors.append(f"local_users_groups[{index}].name {name!r} is listed twice; keep one entry")
        group_names.add(name)
        if not isinstance(gid, int) or gid < 1000:
            errors.append(f"local_users_groups[{index}].gid is {gid!r}; use a number of 1000 or more")
        elif gid in seen_gids:
            errors.append(f"local_users_groups[{index}].gid {gid} is also the gid of {seen_gids[gid]}; make it unique")
        else:
            seen_gids[gid] = str(name)
    seen_uids: dict[int, str] = {}
    own_gids: dict[int, str] = {}
    user_names = set()
    for index, user in enumerate(settings.get("local_users_accounts") or []):
        name, uid = user.get("name"), user.get("uid")
        if not isinstance(name, str) or not UNIX_NAME.fullmatch(name):
            errors.append(f"local_users_accounts[{index}].name is {name!r}; use a lower-case Unix login name")
        elif name in user_names:
            errors.append(f"local_users_accounts[{index}].name {name!r} is listed twice; keep one entry")
        user_names.add(name)
        own_gid = user.get("gid", uid)
        clash = seen_gids.get(own_gid) if isinstance(own_gid, int) else None
        if clash is None and isinstance(own_gid, int) and own_gid in own_gids and "gid" in user:
            clash = f"the own group of {own_gids[own_gid]}"
        if clash is not None:
            errors.append(
                f"local_users_accounts[{index}] ({name}) gets its own group with gid {own_gid}, which is the gid "
                f"of {clash}; set local_users_accounts[{index}].gid to a free gid"
            )
        elif isinstance(own_gid, int):
            own_gids.setdefault(own_gid, str(name))
        if not isinstance(uid, int) or uid < 1000:
            errors.append(f"local_users_accounts[{index}].uid is {uid!r}; use a number of 1000 or more")
        elif uid in seen_uids:
            errors.append(
                f"local_users_accounts[{index}].uid {uid} is also the uid of {seen_uids[uid]}; make it unique"
            )
        else:
            seen_uids[uid] = str(name)
    return errors


def htcondor_settings_errors(settings, groups) -> list[str]:
    _check_types("htcondor_settings_errors", settings, groups)
    errors = []
    cms = list(groups.get("condor_central_manager", []))
    if settings.get("manage_pool", True) and len(cms) != 1:
        errors.append(
            f"inventory group condor_central_manager has {len(cms)} hosts ({', '.join(cms) or 'none'}); "
            "put exactly one host in it, or set htcondor_manage_pool: false to use an existing pool"
        )
    return errors + _domain_errors(settings) + _key_errors(settings)


class FilterModule:
    def filters(self):
        return {
            "condorlab_inventory_errors": condorlab_inventory_errors,
            "htcondor_settings_errors": htcondor_settings_errors,
            "local_users_errors": local_users_errors,
        }
