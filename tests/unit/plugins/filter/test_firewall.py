from __future__ import annotations

import sys

import pytest
from ansible.errors import AnsibleFilterError

firewall = sys.modules["condorlab_filter_firewall"]

HOSTVARS = {
    "cm": {"ansible_all_ipv4_addresses": ["10.89.0.2"]},
    "hub": {"firewall_dns_name": "hub.example.org"},
    "wn1": {"firewall_addresses": ["192.0.2.10", "2001:db8::10"], "ansible_all_ipv4_addresses": ["10.89.0.4"]},
    "wn2": {},
    "oddname": {"firewall_dns_name": "not a name!"},
}


def rule(**change):
    return {"comment": "HTCondor", "proto": "tcp", "ports": [9618], "sources": ["cm", "hub"], **change}


def test_hosts_are_matched_by_their_rule_s_sets():
    assert firewall.firewall_nft_rules([rule()], HOSTVARS) == [
        'ip saddr @htcondor_v4 tcp dport { 9618 } accept comment "HTCondor"',
        'ip6 saddr @htcondor_v6 tcp dport { 9618 } accept comment "HTCondor"',
    ]


def test_the_sets_list_the_hosts_and_the_names_they_are_resolved_by():
    rules = [rule(), rule(comment="HTCondor (UDP)", proto="udp"), rule(comment="Sessions", sources=["hub"])]
    assert firewall.firewall_host_sets(rules, HOSTVARS) == {
        "hosts": {"cm": "cm", "hub": "hub.example.org"},
        "sets": [
            {"v4": "htcondor_v4", "v6": "htcondor_v6", "hosts": ["cm", "hub"]},
            {"v4": "htcondor_udp_v4", "v6": "htcondor_udp_v6", "hosts": ["cm", "hub"]},
            {"v4": "sessions_v4", "v6": "sessions_v6", "hosts": ["hub"]},
        ],
    }


def test_rules_with_the_same_comment_get_sets_of_their_own():
    rules = [rule(), rule(sources=["wn2"]), rule(comment="1 more")]
    sets = firewall.firewall_host_sets(rules, HOSTVARS)["sets"]
    assert [s["v4"] for s in sets] == ["htcondor_v4", "htcondor_2_v4", "hosts_1_more_v4"]
    lines = firewall.firewall_nft_rules(rules, HOSTVARS)
    assert 'ip saddr @htcondor_2_v4 tcp dport { 9618 } accept comment "HTCondor"' in lines


def test_fixed_addresses_and_networks_are_written_into_the_rule():
    lines = firewall.firewall_nft_rules([rule(sources=["wn1", "10.0.0.0/24", "cm"])], HOSTVARS)
    assert lines == [
        'ip saddr { 10.0.0.0/24, 192.0.2.10 } tcp dport { 9618 } accept comment "HTCondor"',
        'ip6 saddr { 2001:db8::10 } tcp dport { 9618 } accept comment "HTCondor"',
        'ip saddr @htcondor_v4 tcp dport { 9618 } accept comment "HTCondor"',
        'ip6 saddr @htcondor_v6 tcp dport { 9618 } accept comment "HTCondor"',
    ]
    assert firewall.firewall_host_sets([rule(sources=["wn1"])], HOSTVARS) == {"hosts": {}, "sets": []}


def test_any_opens_to_everybody_and_ranges_pass():
    lines = firewall.firewall_nft_rules([rule(sources=["any", "cm"], ports=[443, "50000-50999"])], HOSTVARS)
    assert lines == ['tcp dport { 443, 50000-50999 } accept comment "HTCondor"']
    assert firewall.firewall_host_sets([rule(sources=["cm", "any"])], HOSTVARS)["sets"] == []


def test_networks_and_udp():
    lines = firewall.firewall_nft_rules([rule(proto="udp", sources=["10.0.0.0/24", "2001:db8::/64"])], HOSTVARS)
    assert lines == [
        'ip saddr { 10.0.0.0/24 } udp dport { 9618 } accept comment "HTCondor"',
        'ip6 saddr { 2001:db8::/64 } udp dport { 9618 } accept comment "HTCondor"',
    ]


def test_no_sources_opens_nothing():
    assert firewall.firewall_nft_rules([rule(sources=[])], HOSTVARS) == []


def test_a_dns_name_must_be_one():
    assert firewall.firewall_dns_name_errors("wn1.example.org") == []
    assert firewall.firewall_dns_name_errors("wn_1") == []
    (problem,) = firewall.firewall_dns_name_errors("wn1 example")
    assert "firewall_dns_name 'wn1 example' is not a DNS name" in problem


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"proto": "icmp"}, "proto must be tcp or udp"),
        ({"ports": []}, "ports must be a non-empty list"),
        ({"ports": [70000]}, "is not a port number"),
        ({"ports": ["900-100"]}, "first <= last"),
        ({"ports": ["22; drop"]}, "is not a port number"),
        ({"sources": ["oddname"]}, "host oddname: firewall_dns_name 'not a name!' is not a DNS name"),
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


def test_a_fragment_holds_the_rule_lines_the_hosts_and_their_sets():
    fragment = firewall.firewall_fragment([rule()], HOSTVARS)
    assert fragment == {
        "rules": firewall.firewall_nft_rules([rule()], HOSTVARS),
        **firewall.firewall_host_sets([rule()], HOSTVARS),
    }


def test_the_ruleset_takes_the_kept_fragments_in_the_layout_s_order():
    base = firewall.firewall_fragment([rule(comment="SSH", ports=[22], sources=["any"])], HOSTVARS)
    condor = firewall.firewall_fragment([rule()], HOSTVARS)
    hub = firewall.firewall_fragment([rule(comment="Public", ports=[8443], sources=["any"])], HOSTVARS)
    gone = firewall.firewall_fragment([rule(comment="Gone", ports=[1])], HOSTVARS)
    on_host = {"jupyterhub": hub, "htcondor": condor, "base": base, "prometheus": gone}
    result = firewall.firewall_assemble(on_host, ["base", "htcondor", "jupyterhub"])
    assert result["fragments"] == ["base", "htcondor", "jupyterhub"]
    assert result["rules"] == base["rules"] + condor["rules"] + hub["rules"]
    assert result["sets"] == condor["sets"] and result["hosts"] == {"cm": "cm", "hub": "hub.example.org"}


def test_two_fragments_that_make_the_same_set_are_refused():
    condor = firewall.firewall_fragment([rule()], HOSTVARS)
    with pytest.raises(AnsibleFilterError, match="the rules of base and of htcondor both make the set htcondor"):
        firewall.firewall_assemble({"htcondor": condor, "base": condor}, ["base", "htcondor"])
