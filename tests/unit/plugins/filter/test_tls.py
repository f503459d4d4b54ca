from __future__ import annotations

import sys

import pytest
from ansible.errors import AnsibleFilterError

tls = sys.modules["condorlab_filter_tls"]


def test_execute_hosts_become_dns_names():
    assert tls.condorlab_session_alt_names(["wn1", "WN2"]) == ["DNS:wn1", "DNS:wn2"]


def test_domain_is_appended_to_short_names_only():
    names = tls.condorlab_session_alt_names(["wn1", "wn2.other.org"], domain="farm.example.org")
    assert names == ["DNS:wn1", "DNS:wn1.farm.example.org", "DNS:wn2.other.org"]


def test_wildcard_replaces_the_host_list():
    assert tls.condorlab_session_alt_names(["wn1"], wildcard="*.Farm.example.org") == ["DNS:*.farm.example.org"]


def test_duplicates_are_dropped():
    assert tls.condorlab_session_alt_names(["wn1", "wn1."]) == ["DNS:wn1"]


@pytest.mark.parametrize("wildcard", ["*", "*.org", "wn*.example.org", "*.*.example.org", "*.exa mple.org"])
def test_bad_wildcards_are_refused(wildcard):
    with pytest.raises(AnsibleFilterError, match="give one of the form"):
        tls.condorlab_session_alt_names(["wn1"], wildcard=wildcard)


@pytest.mark.parametrize("host", ["wn_1", "-wn1", "wn1 ", "10.0.0.1/24", ""])
def test_bad_host_names_are_refused(host):
    with pytest.raises(AnsibleFilterError, match="is not a DNS host name"):
        tls.condorlab_session_alt_names([host])


def test_no_execute_hosts_is_refused():
    with pytest.raises(AnsibleFilterError, match="no execute hosts"):
        tls.condorlab_session_alt_names([])


def test_bad_domain_is_refused():
    with pytest.raises(AnsibleFilterError, match="not a DNS domain name"):
        tls.condorlab_session_alt_names(["wn1"], domain="farm example")
