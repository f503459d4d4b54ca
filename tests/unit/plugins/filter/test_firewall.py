from __future__ import annotations

import sys

import pytest
from ansible.errors import AnsibleFilterError

firewall = sys.modules["condorlab_filter_firewall"]

HOSTVARS = {
    "cm": {"ansible_all_ipv4_addresses": ["10.89.0.2"], "ansible_all_ipv6_addresses": ["fe80::1", "fd00::2"]},
    "hub": {"ansible_all_ipv4_addresses": ["10.89.0.3"], "ansible_all_ipv6_addresses": []},
    "wn1": {"firewall_addresses": ["192.0.2.10"], "ansible_all_ipv4_addresses": ["10.89.0.4"]},
    "nofacts": {},
}


def rule(**change):
    return {"comment": "HTCondor", "proto": "tcp", "ports": [9618], "sources": ["cm", "hub"], **change}


def test_hosts_become_their_addresses():
    assert firewall.firewall_nft_rules([rule()], HOSTVARS) == [
        'ip saddr { 10.89.0.2, 10.89.0.3 } tcp dport { 9618 } accept comment "HTCondor"',
        'ip6 saddr { fd00::2 } tcp dport { 9618 } accept comment "HTCondor"',
    ]


def test_explicit_addresses_win_over_facts():
    lines = firewall.firewall_nft_rules([rule(sources=["wn1"])], HOSTVARS)
    assert lines == ['ip saddr { 192.0.2.10 } tcp dport { 9618 } accept comment "HTCondor"']


def test_any_opens_to_everybody_and_ranges_pass():
    lines = firewall.firewall_nft_rules([rule(sources=["any"], ports=[443, "50000-50999"])], HOSTVARS)
    assert lines == ['tcp dport { 443, 50000-50999 } accept comment "HTCondor"']


def test_networks_and_udp():
    lines = firewall.firewall_nft_rules([rule(proto="udp", sources=["10.0.0.0/24", "2001:db8::/64"])], HOSTVARS)
    assert lines == [
        'ip saddr { 10.0.0.0/24 } udp dport { 9618 } accept comment "HTCondor"',
        'ip6 saddr { 2001:db8::/64 } udp dport { 9618 } accept comment "HTCondor"',
    ]


def test_no_sources_opens_nothing():
    assert firewall.firewall_nft_rules([rule(sources=[])], HOSTVARS) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"proto": "icmp"}, "proto must be tcp or udp"),
        ({"ports": []}, "ports must be a non-empty list"),
        ({"ports": [70000]}, "is not a port number"),
        ({"ports": ["900-100"]}, "first <= last"),
        ({"ports": ["22; drop"]}, "is not a port number"),
        ({"sources": ["nofacts"]}, "no address is known for host nofacts"),
        ({"sources": ["not a host"]}, "neither an inventory host nor an address"),
        ({"sources": "any"}, "sources must be a list"),
        ({"comment": 'x" accept'}, "needs a comment"),
        ({"chain": "output"}, "unknown keys"),
    ],
)
def test_bad_rules_are_refused(change, message):
    with pytest.raises(AnsibleFilterError, match=message):
        firewall.firewall_nft_rules([rule(**change)], HOSTVARS)


def test_rule_errors_before_hosts_are_known():
    assert firewall.firewall_rule_errors([rule(sources=["somehost", "10.0.0.1"])]) == []
    problems = firewall.firewall_rule_errors([rule(ports=[0]), rule(sources=["10.0.0.300/8"])])
    assert len(problems) == 2
    assert "rule 'HTCondor': port 0" in problems[0]
