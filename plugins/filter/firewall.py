# Copyright: condorlab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that turn the roles' firewall rule fragments into nftables rules."""

from __future__ import annotations

import ipaddress
import re

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: firewall_nft_rules
short_description: Turn firewall rule fragments into nftables rule lines
description:
  - Each role that needs inbound connections exports a list of rules; the
    firewall role joins them and renders them with this filter into the
    input chain of its nftables ruleset (policy drop).
  - A rule is a dict with C(comment), C(proto) (tcp or udp), C(ports) (port
    numbers or C("first-last") ranges) and C(sources). A source is C(any), an
    IPv4/IPv6 address or network, or an inventory host name.
  - An inventory host stands for the addresses its DNS name (its
    C(firewall_dns_name), else its inventory name) resolves to. The rule
    matches a pair of named sets of the table (IPv4, IPv6) of its own, called
    after its comment (C(htcondor_between_pool_hosts_v4), C(..._v6)), that hold
    the addresses of the hosts it names. The ruleset declares them empty;
    C(condorlab-firewall-resolve) keeps them filled as the names' answers
    change (the companion filter C(firewall_host_sets) lists the hosts and
    the sets). A host with C(firewall_addresses) stands for those addresses,
    written into the rule.
  - A rule whose sources name no address at all opens nothing.
  - Refuses malformed rules, naming the rule and the fix.
positional: _input
options:
  _input:
    description: The rules.
    type: list
    elements: dict
    required: true
  hostvars:
    description: Ansible's C(hostvars), to tell host names from addresses and read their firewall settings.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Render the rules
  ansible.builtin.debug:
    msg: >-
      {{ [{'comment': 'HTCondor', 'proto': 'tcp', 'ports': [9618], 'sources': ['cm', '10.0.0.0/24']}]
         | firewall_nft_rules(hostvars) }}
  # ['ip saddr { 10.0.0.0/24 } tcp dport { 9618 } accept comment "HTCondor"',
  #  'ip saddr @htcondor_v4 tcp dport { 9618 } accept comment "HTCondor"',
  #  'ip6 saddr @htcondor_v6 tcp dport { 9618 } accept comment "HTCondor"']

- name: The hosts the rules name by their names, and the sets of their addresses
  ansible.builtin.debug:
    msg: "{{ rules | firewall_host_sets(hostvars) }}"
  # {'hosts': {'cm': 'cm'}, 'sets': [{'v4': 'htcondor_v4', 'v6': 'htcondor_v6', 'hosts': ['cm']}]}
"""

RETURN = r"""
_value:
  description: nftables rule statements, one a line, for an inet table's input chain.
  type: list
  elements: str
"""

HOST_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})$")
DNS_NAME = re.compile(r"^(?=.{1,253}\.?$)[A-Za-z0-9_][A-Za-z0-9_-]{0,62}(\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*\.?$")
COMMENT = re.compile(r"^[A-Za-z0-9 ,.:;()'/+_-]{1,120}$")
PORT_RANGE = re.compile(r"^([0-9]{1,5})-([0-9]{1,5})$")


def _fail(rule_name: str, message: str) -> None:
    raise AnsibleFilterError(f"firewall_nft_rules: rule {rule_name!r}: {message}")


def _ports(rule_name: str, ports) -> list[str]:
    if not isinstance(ports, (list, tuple)) or not ports:
        _fail(rule_name, f"ports must be a non-empty list, not {ports!r}")
    result = []
    for port in ports:
        text = str(port).strip()
        match = PORT_RANGE.match(text)
        if match:
            low, high = int(match.group(1)), int(match.group(2))
            if not 1 <= low <= high <= 65535:
                _fail(rule_name, f"port range {text!r} must be first-last with 1 <= first <= last <= 65535")
            result.append(f"{low}-{high}")
        elif text.isdigit() and 1 <= int(text) <= 65535:
            result.append(str(int(text)))
        else:
            _fail(rule_name, f"port {port!r} is not a port number (1-65535) or a first-last range")
    return result


def _set_stem(comment: str) -> str:
    """A rule's set names without _v4/_v6, from its comment ("Hub API, from nodes" -> hub_api_from_nodes)."""
    stem = re.sub(r"[^a-z0-9]+", "_", comment.lower()).strip("_")[:60].rstrip("_") or "hosts"
    return stem if stem[0].isalpha() else f"hosts_{stem}"


def firewall_dns_name_errors(name) -> list[str]:
    """What is wrong with a firewall_dns_name ([] when nothing)."""
    if isinstance(name, str) and DNS_NAME.match(name):
        return []
    return [
        f"firewall_dns_name {name!r} is not a DNS name; set it to the name the other hosts resolve this host by "
        "(e.g. its FQDN), or set firewall_addresses"
    ]


def _dns_name(host: str, hostvars) -> str:
    name = hostvars[host].get("firewall_dns_name") or host
    for problem in firewall_dns_name_errors(name):
        raise AnsibleFilterError(f"firewall: host {host}: {problem}")
    return name


def _sources(rule_name: str, sources, hostvars) -> tuple[bool, list, list, list]:
    """(any, IPv4 networks, IPv6 networks, inventory hosts followed by name) of a rule's sources."""
    if not isinstance(sources, (list, tuple)):
        _fail(rule_name, f"sources must be a list, not {sources!r}")
    v4: set = set()
    v6: set = set()
    hosts: set = set()
    for source in sources:
        if not isinstance(source, str) or not source:
            _fail(rule_name, f"source {source!r} is not a host name, an address or 'any'")
        if source == "any":
            return True, [], [], []
        if hostvars is None and HOST_NAME.match(source) and not _is_network(source):
            continue  # checked before the hosts are known: a host name is fine
        if hostvars is not None and source in hostvars:
            explicit = hostvars[source].get("firewall_addresses")
            if not explicit:
                hosts.add(source)
                continue
            candidates = list(explicit)
        else:
            candidates = [source]
        for candidate in candidates:
            try:
                network = ipaddress.ip_network(candidate, strict=False)
            except ValueError:
                _fail(
                    rule_name,
                    f"source {candidate!r} is neither an inventory host nor an address or network; "
                    "use a host of the inventory, an address such as 10.0.0.5 or a network such as 10.0.0.0/24",
                )
            (v4 if network.version == 4 else v6).add(network)
    return False, sorted(v4), sorted(v6), sorted(hosts)


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _network_text(network) -> str:
    full = 32 if network.version == 4 else 128
    return str(network.network_address) if network.prefixlen == full else str(network)


def _checked_rules(rules, hostvars):
    """Each rule checked, with its name, proto, ports text and sources."""
    if not isinstance(rules, (list, tuple)):
        raise AnsibleFilterError(f"firewall_nft_rules: expected a list of rules, got {rules!r}")
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict):
            raise AnsibleFilterError(f"firewall_nft_rules: rule {index} is not a dict: {rule!r}")
        name = rule.get("comment", "")
        if not isinstance(name, str) or not COMMENT.match(name):
            raise AnsibleFilterError(
                f"firewall_nft_rules: rule {index} needs a comment of letters, digits, spaces and ,.:;()'/+_- "
                f"(at most 120), not {name!r}"
            )
        unknown = set(rule) - {"comment", "proto", "ports", "sources"}
        if unknown:
            _fail(name, f"unknown keys {sorted(unknown)}; a rule has comment, proto, ports and sources")
        proto = rule.get("proto", "tcp")
        if proto not in ("tcp", "udp"):
            _fail(name, f"proto must be tcp or udp, not {proto!r}")
        ports = ", ".join(_ports(name, rule.get("ports")))
        yield name, proto, ports, _sources(name, rule.get("sources", []), hostvars)


def _with_sets(rules, hostvars) -> list[tuple]:
    """Each rule checked, with the stem of its set names when it names hosts (None when not)."""
    result = []
    used: set[str] = set()
    for name, proto, ports, sources in _checked_rules(rules, hostvars):
        stem = None
        if sources[3]:
            stem = base = _set_stem(name)
            number = 2
            while stem in used:
                stem, number = f"{base}_{number}", number + 1
            used.add(stem)
        result.append((name, proto, ports, sources, stem))
    return result


def firewall_host_sets(rules, hostvars) -> dict:
    """The hosts the rules name by their names and the sets that hold their addresses.

    ``hosts`` maps each inventory host to the DNS name it is resolved by;
    ``sets`` has a pair of sets (v4, v6) for each rule that names hosts,
    called after the rule's comment, and the hosts whose addresses it holds.
    """
    sets = [
        {"v4": f"{stem}_v4", "v6": f"{stem}_v6", "hosts": list(sources[3])}
        for *_, sources, stem in _with_sets(rules, hostvars)
        if stem
    ]
    named = sorted({host for entry in sets for host in entry["hosts"]})
    return {"hosts": {host: _dns_name(host, hostvars) for host in named}, "sets": sets}


def firewall_nft_rules(rules, hostvars) -> list[str]:
    firewall_host_sets(rules, hostvars)  # the hosts' names are checked
    lines = []
    for name, proto, ports, (everyone, v4, v6, _), stem in _with_sets(rules, hostvars):
        tail = f'{proto} dport {{ {ports} }} accept comment "{name}"'
        if everyone:
            lines.append(tail)
            continue
        if v4:
            lines.append(f"ip saddr {{ {', '.join(_network_text(n) for n in v4)} }} {tail}")
        if v6:
            lines.append(f"ip6 saddr {{ {', '.join(_network_text(n) for n in v6)} }} {tail}")
        if stem:
            lines.append(f"ip saddr @{stem}_v4 {tail}")
            lines.append(f"ip6 saddr @{stem}_v6 {tail}")
    return lines


def firewall_fragment(rules, hostvars) -> dict:
    """One role's rules as a host keeps them (a fragment file): the nftables rule lines, the
    hosts they name by their names and the sets of those hosts' addresses (firewall_host_sets)."""
    return {"rules": firewall_nft_rules(rules, hostvars), **firewall_host_sets(rules, hostvars)}


def firewall_assemble(fragments, kept) -> dict:
    """The ruleset's parts from a host's fragments (name -> fragment), those ``kept`` in that order.

    Two fragments must not make the same set.
    """
    names = [name for name in kept if name in fragments]
    rules, hosts, sets, owner = [], {}, [], {}
    for name in names:
        fragment = fragments[name]
        for pair in fragment.get("sets", []):
            if pair["v4"] in owner:
                raise AnsibleFilterError(
                    f"firewall_assemble: the rules of {owner[pair['v4']]} and of {name} both make the set "
                    f"{pair['v4'][:-3]}; give one of these rules another comment"
                )
            owner[pair["v4"]] = name
            sets.append(pair)
        hosts.update(fragment.get("hosts", {}))
        rules.extend(fragment.get("rules", []))
    return {"fragments": names, "rules": rules, "hosts": hosts, "sets": sets}


def firewall_rule_errors(rules) -> list[str]:
    """The problems of a list of rules, checked before any host is known (host names are taken as they are)."""
    if not isinstance(rules, (list, tuple)):
        return [f"expected a list of rules, got {rules!r}"]
    problems = []
    for rule in rules:
        try:
            firewall_nft_rules([rule], None)
        except AnsibleFilterError as exc:
            problems.append(str(exc.message).removeprefix("firewall_nft_rules: "))
    return problems


class FilterModule:
    def filters(self):
        return {
            "firewall_nft_rules": firewall_nft_rules,
            "firewall_host_sets": firewall_host_sets,
            "firewall_rule_errors": firewall_rule_errors,
            "firewall_fragment": firewall_fragment,
            "firewall_assemble": firewall_assemble,
            "firewall_dns_name_errors": firewall_dns_name_errors,
        }
