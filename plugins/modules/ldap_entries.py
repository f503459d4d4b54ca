#!/usr/bin/python
# Copyright: condorlab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: ldap_entries
short_description: Keep a list of LDAP entries, each with exactly the listed attribute values, in one connection
description:
  - Ensures that every entry of O(entries) exists, in the order given (a branch before its
    children), with its object classes, and that each attribute it lists has exactly the listed
    values. Attributes an entry does not list (a user's password, say) are left as they are, and
    entries not listed are kept.
  - A missing entry is added; an existing one gets the object classes it lacks and the listed
    attributes replaced where they differ (an empty list removes the attribute).
  - One connection and one search per entry, however many entries there are, where a task per
    entry would cost a module run each.
  - Binds with SASL EXTERNAL, as root does over C(ldapi:///) on the directory's own host.
version_added: "0.1.0"
options:
  server_uri:
    description: The directory's URI.
    type: str
    default: ldapi:///
  entries:
    description: The entries, in the order they are to be made.
    type: list
    elements: dict
    required: true
    suboptions:
      dn:
        description: The entry's distinguished name.
        type: str
        required: true
      objectClass:
        description: Its object classes.
        type: list
        elements: str
        required: true
      attributes:
        description: Attribute name to a value or a list of values; each is kept exactly.
        type: dict
        default: {}
requirements: [python3-ldap on the host]
attributes:
  check_mode:
    support: full
    description: Reports which entries would be added or changed without writing.
  diff_mode:
    support: none
    description: The names of changed attributes are returned; values are not.
author:
  - condorlab contributors
"""

EXAMPLES = r"""
- name: Keep the site's branches, groups and users in the directory
  ldap_entries:
    server_uri: ldapi:///
    entries:
      - dn: ou=people,dc=example,dc=org
        objectClass: [organizationalUnit]
      - dn: cn=physics,ou=groups,dc=example,dc=org
        objectClass: [posixGroup]
        attributes: {gidNumber: "3001", memberUid: [alice, bob]}
"""

RETURN = r"""
added:
  description: The entries added (or that would be, in check mode).
  type: list
  elements: str
  returned: always
modified:
  description: Entry to the names of the attributes changed (objectClass when classes were added).
  type: dict
  returned: always
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import ldap

    LDAP_IMPORT_ERROR = None
except ImportError:
    ldap = None
    LDAP_IMPORT_ERROR = traceback.format_exc()


def _values(value) -> list[bytes]:
    """An attribute's wanted values as LDAP bytes (one value or a list of them)."""
    items = value if isinstance(value, list) else [value]
    return [str(item).encode() for item in items]


def plan(entry: dict, found: dict | None) -> tuple[str, list]:
    """What to do for ``entry`` given the attributes ``found`` on it (None: no such entry):
    ("add", attribute list), ("modify", modifications) or ("keep", [])."""
    classes = [c.encode() for c in entry["objectClass"]]
    wanted = {name: _values(value) for name, value in (entry.get("attributes") or {}).items()}
    if found is None:
        return "add", [("objectClass", classes), *[(name, vals) for name, vals in wanted.items() if vals]]
    have = {name.lower(): values for name, values in found.items()}
    present = {c.lower() for c in have.get("objectclass", [])}
    changes = []
    missing = [c for c in classes if c.lower() not in present]
    if missing:
        changes.append((ldap.MOD_ADD, "objectClass", missing))
    for name, vals in wanted.items():
        if sorted(vals) != sorted(have.get(name.lower(), [])):
            changes.append((ldap.MOD_REPLACE, name, vals or None))
    return ("modify", changes) if changes else ("keep", [])


def keep(connection, entries: list[dict], check_mode: bool, added: list[str], modified: dict[str, list[str]]) -> None:
    """Bring each entry to what it lists, recording in ``added`` and ``modified`` what was done."""
    for entry in entries:
        dn = entry["dn"]
        names = ["objectClass", *(entry.get("attributes") or {})]
        try:
            ((_, found),) = connection.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)", names)
        except ldap.NO_SUCH_OBJECT:
            found = None
        action, changes = plan(entry, found)
        if action == "add":
            added.append(dn)
            if not check_mode:
                connection.add_s(dn, changes)
        elif action == "modify":
            modified[dn] = [name for _, name, _ in changes]
            if not check_mode:
                connection.modify_s(dn, changes)


def main():
    module = AnsibleModule(
        argument_spec={
            "server_uri": {"type": "str", "default": "ldapi:///"},
            "entries": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "dn": {"type": "str", "required": True},
                    "objectClass": {"type": "list", "elements": "str", "required": True},
                    "attributes": {"type": "dict", "default": {}},
                },
            },
        },
        supports_check_mode=True,
    )
    if ldap is None:
        module.fail_json(msg=missing_required_lib("python3-ldap"), exception=LDAP_IMPORT_ERROR)
    uri = module.params["server_uri"]
    added, modified = [], {}
    try:
        connection = ldap.initialize(uri)
        connection.sasl_non_interactive_bind_s("EXTERNAL")
        keep(connection, module.params["entries"], module.check_mode, added, modified)
    except ldap.LDAPError as err:
        changed = bool(added or modified)
        module.fail_json(msg=f"the directory at {uri} refused: {err}", changed=changed, added=added, modified=modified)
    module.exit_json(changed=bool(added or modified), added=added, modified=modified)


if __name__ == "__main__":
    main()
