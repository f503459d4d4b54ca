# Copyright: condorlab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The site's layout (playbooks/vars/layout.yml): which roles run on a host, which nodes keep an interactive share."""

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
  - C(condorlab_share_nodes(hostvars)) - given a list of execute hosts, those
    whose C(condorlab_interactive_share) keeps cores for sessions (it may be set
    per node or node group, so the central manager and the hub ask the nodes).
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
- ansible.builtin.debug:
    msg: "{{ condorlab_hosts.execute_nodes | condorlab_share_nodes(hostvars) | length > 0 }}"
  # true when any execute node keeps an interactive share
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


def condorlab_share_nodes(hosts, hostvars) -> list[str]:
    """The hosts among ``hosts`` whose condorlab_interactive_share keeps cores for sessions.

    The share may be set per execute node or node group, so the central
    manager (its negotiator) and the hub (the sessions' requirements) ask the
    execute nodes' own variables rather than theirs.
    """
    nodes = []
    for host in hosts or []:
        share = hostvars[host].get("condorlab_interactive_share") or {}
        if not isinstance(share, dict):
            raise AnsibleFilterError(
                f"{host}: condorlab_interactive_share must be a mapping (cpus, memory, oversubscribe), not {share!r}"
            )
        try:
            cpus = int(share.get("cpus") or 0)
        except (TypeError, ValueError):
            raise AnsibleFilterError(
                f"{host}: condorlab_interactive_share.cpus is {share.get('cpus')!r}; give a whole number of cores"
            ) from None
        if cpus > 0:
            nodes.append(host)
    return nodes


def condorlab_hosts_of(group_of, groups) -> dict[str, list[str]]:
    """Each part of the site (central_managers, access_points, ...) -> the hosts of its inventory group."""
    if not isinstance(group_of, dict) or not isinstance(groups, dict):
        raise AnsibleFilterError("condorlab_hosts_of: expected the parts' groups and Ansible's groups, as mappings")
    return {part: list(groups.get(group, [])) for part, group in group_of.items()}


class FilterModule:
    def filters(self):
        return {
            "condorlab_roles_on": condorlab_roles_on,
            "condorlab_share_nodes": condorlab_share_nodes,
            "condorlab_hosts_of": condorlab_hosts_of,
        }
