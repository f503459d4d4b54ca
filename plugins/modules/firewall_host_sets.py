#!/usr/bin/python
# Copyright: condorlab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: firewall_host_sets
short_description: Fill the firewall's host sets with the addresses the hosts' names resolve to
description:
  - The firewall role's ruleset matches the inventory hosts its rules name
    against nftables sets (an IPv4 and an IPv6 set for each such rule) that
    it declares empty. This module resolves each host's DNS name on the
    managed host and replaces a set's contents, in one C(nft) transaction,
    only when the answers differ from what the set holds.
  - A name that does not resolve keeps the addresses it had last; the module
    warns. It fails when no address of a host was ever known.
  - Keeps every host's last addresses and the sets as nftables statements in
    O(state_dir); the ruleset includes the latter when it is loaded.
    C(condorlab-firewall-resolve), run by a timer, does the same with the same
    code (module_utils C(firewall_sets)).
version_added: "0.1.0"
options:
  hosts:
    description: Inventory host -> the DNS name it is resolved by, as the C(firewall_host_sets) filter gives them.
    type: dict
    required: true
  sets:
    description:
      - The sets, as the C(firewall_host_sets) filter gives them; C(v4) and C(v6) name a set pair,
        C(hosts) the hosts whose addresses it holds.
    type: list
    elements: dict
    required: true
  table:
    description: The ruleset's table, C(<family> <name>).
    type: str
    default: inet condorlab
  state_dir:
    description: Where the hosts' last addresses and the sets are kept for the next load of the ruleset.
    type: path
    default: /var/lib/condorlab-firewall
  nft:
    description: Path of the C(nft) program.
    type: path
    default: /usr/sbin/nft
attributes:
  check_mode:
    support: full
    description: Resolves the names and reports which sets would change, changing nothing.
  diff_mode:
    support: none
    description: The changes are returned in RV(changes).
author:
  - condorlab contributors
"""

EXAMPLES = r"""
- name: Fill the host sets
  firewall_host_sets:
    hosts: {cm: cm.example.org, wn1: wn1.example.org}
    sets:
      - {v4: htcondor_between_pool_hosts_v4, v6: htcondor_between_pool_hosts_v6, hosts: [cm, wn1]}
"""

RETURN = r"""
sets:
  description: Each set and the addresses it holds now (in check mode, would hold).
  returned: always
  type: dict
  sample: {htcondor_between_pool_hosts_v4: [10.89.0.2, 10.89.0.9], htcondor_between_pool_hosts_v6: []}
changes:
  description: The sets that changed, with their addresses before and after.
  returned: always
  type: dict
  sample: {htcondor_between_pool_hosts_v4: {before: [10.89.0.2, 10.89.0.4], after: [10.89.0.2, 10.89.0.9]}}
moved:
  description: The hosts whose addresses differ from those they had last, before and after.
  returned: always
  type: dict
  sample: {wn1: {before: [10.89.0.4], after: [10.89.0.9]}}
kept:
  description: The hosts whose names did not resolve, why, and the addresses they keep.
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.firewall_sets import FirewallSetsError, config_from, sync


def _pairs(changes: dict) -> dict:
    return {name: {"before": before, "after": after} for name, (before, after) in changes.items()}


def run(module: AnsibleModule) -> dict:
    params = module.params
    try:
        config = config_from(params["hosts"], params["sets"], params["table"], params["state_dir"])
    except FirewallSetsError as error:
        module.fail_json(msg=str(error))
    if not config.sets:
        return {"changed": False, "sets": {}, "changes": {}, "moved": {}, "kept": []}
    try:
        result = sync(config, check=module.check_mode, nft=params["nft"])
    except FirewallSetsError as error:
        if module.check_mode:
            # A new host: nftables is installed by an earlier task that check mode did not run.
            return {"changed": True, "sets": {}, "changes": {}, "moved": {}, "kept": [], "msg": str(error)}
        module.fail_json(msg=str(error))
    except OSError as error:
        module.fail_json(msg=f"state_dir: {error}")
    kept = [item._asdict() for item in result.kept]
    for item in result.kept:
        module.warn(
            f"{item.host}: its name {item.name} does not resolve here ({item.error}); "
            f"it keeps {', '.join(item.addresses)}"
        )
    if result.unknown:
        names = ", ".join(f"{item.host} (as {item.name}: {item.error})" for item in result.unknown)
        module.fail_json(
            msg=f"no address is known for {names}: the name does not resolve on this host. Set firewall_dns_name "
            "for that host to a name that resolves here, or firewall_addresses to its fixed addresses",
            kept=kept,
        )
    if not result.loaded and not module.check_mode:
        module.fail_json(msg=f"the table {config.table} is not loaded; start nftables first", kept=kept)
    return {
        "changed": result.changed,
        "sets": result.sets,
        "changes": _pairs(result.changes),
        "moved": _pairs(result.moved),
        "kept": kept,
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            hosts=dict(type="dict", required=True),
            sets=dict(type="list", elements="dict", required=True),
            table=dict(type="str", default="inet condorlab"),
            state_dir=dict(type="path", default="/var/lib/condorlab-firewall"),
            nft=dict(type="path", default="/usr/sbin/nft"),
        ),
        supports_check_mode=True,
    )
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
