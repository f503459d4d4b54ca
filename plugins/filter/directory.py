# Copyright: condorlab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that turn the directory role's users and groups into LDAP entries."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: condorlab_directory_entries
short_description: The directory role's users and Unix groups as LDAP entries
description:
  - C(condorlab_directory_entries(users, groups, base_dn)) gives every entry the
    directory keeps, in the order to make them, for the ldap_entries module -
    the branches C(people), C(groups) and C(services); each Unix group as a
    posixGroup with its members (from the users' C(groups)), followed by each
    user's own group (gid - the user's C(gid), default its uid; no members);
    each user as an inetOrgPerson, posixAccount and shadowAccount.
positional: _input
options:
  _input:
    description: The directory_users.
    type: list
    required: true
  groups:
    description: The directory_groups.
    type: list
    required: true
  base_dn:
    description: The directory's base DN.
    type: str
    required: true
"""

EXAMPLES = r"""
- ansible.builtin.debug:
    msg: "{{ users | condorlab_directory_entries([{'name': 'physics', 'gid': 3001}], 'dc=example,dc=org') }}"
  vars:
    users: [{name: alice, uid: 2001, groups: [physics]}]
  # ou=people, ou=groups, ou=services; cn=physics (memberUid alice), cn=alice; uid=alice
"""

RETURN = r"""
_value:
  description: A list of entries, each with dn, objectClass and attributes.
"""


def _check(name: str, value) -> list:
    if not isinstance(value, list) or not all(isinstance(item, dict) and "name" in item for item in value):
        raise AnsibleFilterError(f"{name}: expected a list of mappings with a name, got {value!r}")
    return value


def condorlab_directory_groups(groups, users) -> list[dict]:
    groups, users = _check("condorlab_directory_groups", groups), _check("condorlab_directory_groups", users)
    result = [
        {
            "name": group["name"],
            "gid": int(group["gid"]),
            "members": sorted(user["name"] for user in users if group["name"] in (user.get("groups") or [])),
        }
        for group in groups
    ]
    result += [{"name": user["name"], "gid": int(user.get("gid", user["uid"])), "members": []} for user in users]
    return result


def condorlab_directory_users(users) -> dict:
    users = _check("condorlab_directory_users", users)
    entries = {}
    for user in users:
        name = user["name"]
        comment = user.get("comment") or name
        attributes = {
            "uid": name,
            "cn": comment,
            "sn": comment.split()[-1] if comment.split() else name,
            "displayName": comment,
            "gecos": comment,
            "uidNumber": str(int(user["uid"])),
            "gidNumber": str(int(user.get("gid", user["uid"]))),
            "homeDirectory": user.get("home") or f"/home/{name}",
            "loginShell": user.get("shell") or "/bin/bash",
        }
        if user.get("mail"):
            attributes["mail"] = user["mail"]
        entries[name] = attributes
    return entries


BRANCHES = ("people", "groups", "services")


def condorlab_directory_entries(users, groups, base_dn) -> list[dict]:
    if not isinstance(base_dn, str) or not base_dn:
        raise AnsibleFilterError(f"condorlab_directory_entries: expected the directory's base DN, got {base_dn!r}")
    entries = [
        {"dn": f"ou={branch},{base_dn}", "objectClass": ["organizationalUnit"], "attributes": {"ou": branch}}
        for branch in BRANCHES
    ]
    entries += [
        {
            "dn": f"cn={group['name']},ou=groups,{base_dn}",
            "objectClass": ["posixGroup"],
            "attributes": {"cn": group["name"], "gidNumber": str(group["gid"]), "memberUid": group["members"]},
        }
        for group in condorlab_directory_groups(groups, users)
    ]
    entries += [
        {
            "dn": f"uid={name},ou=people,{base_dn}",
            "objectClass": ["inetOrgPerson", "posixAccount", "shadowAccount"],
            "attributes": attributes,
        }
        for name, attributes in condorlab_directory_users(users).items()
    ]
    return entries


class FilterModule:
    def filters(self):
        return {
            "condorlab_directory_entries": condorlab_directory_entries,
        }
