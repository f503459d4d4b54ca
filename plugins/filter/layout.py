# Copyright: condorlab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The site's layout (playbooks/vars/layout.yml): which roles run on a host."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: condorlab_roles_on
short_description: The roles condorlab_layout puts on a host
description:
  - Given condorlab_layout (role name -> the inventory groups it runs on) and a
    host's group_names, the roles that run on that host, in layout order. The
    preflight role checks these roles' settings on the host; the firewall role
    gives it their rules.
positional: _input, group_names
options:
  _input:
    description: condorlab_layout.
    type: dict
    required: true
  group_names:
    description: The host's inventory groups.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- ansible.builtin.debug:
    msg: "{{ condorlab_layout | condorlab_roles_on(group_names) }}"
  # on an execute node: ['local_users', 'ca_trust', 'firewall', 'htcondor', 'singleuser']
"""

RETURN = r"""
_value:
  description: Role names.
  type: list
  elements: str
"""


def condorlab_roles_on(layout, group_names) -> list[str]:
    if not isinstance(layout, dict) or not all(
        isinstance(groups, list) and all(isinstance(g, str) for g in groups) for groups in layout.values()
    ):
        raise AnsibleFilterError(
            f"condorlab_roles_on: condorlab_layout must map role names to lists of inventory groups, not {layout!r}"
        )
    mine = set(group_names or [])
    return [role for role, groups in layout.items() if mine & set(groups)]


class FilterModule:
    def filters(self):
        return {"condorlab_roles_on": condorlab_roles_on}
