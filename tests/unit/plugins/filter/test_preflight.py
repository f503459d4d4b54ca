"""Malformed inventories: each is refused with a message naming the variable and the fix."""

from __future__ import annotations

import base64
import sys

import pytest
from ansible.errors import AnsibleFilterError

preflight = sys.modules["condorlab_filter_preflight"]

GOOD_GROUPS = {
    "all": ["cm", "hub", "wn1", "wn2"],
    "condor_central_manager": ["cm"],
    "jupyterhub": ["hub"],
    "condor_execute": ["wn1", "wn2"],
}
# The parts' groups (condorlab_host_groups) and the parts' hosts (condorlab_hosts) of an inventory's groups.
GROUP_OF = {
    "central_managers": "condor_central_manager",
    "access_points": "jupyterhub",
    "execute_nodes": "condor_execute",
}


def parts(groups):
    return {part: list(groups.get(group, [])) for part, group in GROUP_OF.items()}


GOOD_KEY = base64.b64encode(b"k" * 32).decode()
GOOD_HTCONDOR = {
    "manage_pool": True,
    "central_manager": "cm",
    "trust_domain": "condorlab.test",
    "uid_domain": "condorlab.test",
    "signing_key_b64": "",
}
GOOD_USERS = {
    "local_users_groups": [{"name": "physics", "gid": 3001}, {"name": "astro", "gid": 3002}],
    "local_users_accounts": [{"name": "alice", "uid": 2001}, {"name": "bob", "uid": 2002}],
}


def test_good_inventory_has_no_problem():
    assert preflight.condorlab_inventory_errors(parts(GOOD_GROUPS), GROUP_OF) == []
    assert preflight.htcondor_settings_errors(GOOD_HTCONDOR, parts(GOOD_GROUPS), GROUP_OF) == []
    assert (
        preflight.htcondor_settings_errors({**GOOD_HTCONDOR, "signing_key_b64": GOOD_KEY}, parts(GOOD_GROUPS), GROUP_OF)
        == []
    )
    assert preflight.local_users_errors(GOOD_USERS) == []
    assert preflight.local_users_errors({}) == []


def test_external_pool_needs_no_central_manager_group():
    groups = {**GOOD_GROUPS, "condor_central_manager": []}
    settings = {
        **GOOD_HTCONDOR,
        "manage_pool": False,
        "central_manager": "collector.example.org",
        "signing_key_b64": GOOD_KEY,
    }
    assert preflight.htcondor_settings_errors(settings, parts(groups), GROUP_OF) == []


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ({**GOOD_GROUPS, "condor_execute": []}, "inventory group condor_execute is empty"),
        ({k: v for k, v in GOOD_GROUPS.items() if k != "condor_execute"}, "inventory group condor_execute is empty"),
        ({**GOOD_GROUPS, "jupyterhub": []}, "inventory group jupyterhub has 0 hosts (none)"),
        ({**GOOD_GROUPS, "jupyterhub": ["hub", "hub2"]}, "inventory group jupyterhub has 2 hosts (hub, hub2)"),
    ],
)
def test_bad_groups(groups, expected):
    errors = preflight.condorlab_inventory_errors(parts(groups), GROUP_OF)
    assert len(errors) == 1 and errors[0].startswith(expected)


@pytest.mark.parametrize(
    ("groups", "settings", "expected"),
    [
        ({**GOOD_GROUPS, "condor_central_manager": []}, {}, "inventory group condor_central_manager has 0 hosts"),
        ({**GOOD_GROUPS, "condor_central_manager": ["cm", "cm2"]}, {}, "condor_central_manager has 2 hosts (cm, cm2)"),
        (GOOD_GROUPS, {"central_manager": ""}, "htcondor_central_manager is ''"),
        (GOOD_GROUPS, {"central_manager": None}, "htcondor_central_manager is None"),
        (GOOD_GROUPS, {"trust_domain": "bad domain"}, "htcondor_trust_domain is 'bad domain'"),
        (GOOD_GROUPS, {"trust_domain": "-leading.dash"}, "htcondor_trust_domain is '-leading.dash'"),
        (GOOD_GROUPS, {"uid_domain": "under_score.org"}, "htcondor_uid_domain is 'under_score.org'"),
        (GOOD_GROUPS, {"uid_domain": "a" * 64 + ".org"}, "htcondor_uid_domain is 'aaaa"),
        (GOOD_GROUPS, {"signing_key_b64": "CHANGEME"}, "htcondor_signing_key_b64 holds a placeholder"),
        (GOOD_GROUPS, {"signing_key_b64": "REPLACE_ME_WITH_VAULT"}, "htcondor_signing_key_b64 holds a placeholder"),
        (GOOD_GROUPS, {"signing_key_b64": "secret"}, "htcondor_signing_key_b64 holds a placeholder"),
        (GOOD_GROUPS, {"signing_key_b64": "@@@notbase64@@@"}, "htcondor_signing_key_b64 is not valid base64"),
        (GOOD_GROUPS, {"signing_key_b64": base64.b64encode(b"short").decode()}, "decodes to 5 bytes"),
        (
            GOOD_GROUPS,
            {"manage_pool": False, "signing_key_b64": ""},
            "htcondor_signing_key_b64 is empty but htcondor_manage_pool is false",
        ),
    ],
)
def test_bad_htcondor_settings(groups, settings, expected):
    errors = preflight.htcondor_settings_errors({**GOOD_HTCONDOR, **settings}, parts(groups), GROUP_OF)
    assert len(errors) == 1, errors
    assert expected in errors[0]
    assert ";" in errors[0], "every message says how to fix it"


@pytest.mark.parametrize(
    ("users", "expected"),
    [
        ({"local_users_accounts": [{"name": "Alice", "uid": 2001}]}, "local_users_accounts[0].name is 'Alice'"),
        (
            {"local_users_accounts": [{"name": "alice", "uid": 2001}, {"name": "alice", "uid": 2005}]},
            "local_users_accounts[1].name 'alice' is listed twice",
        ),
        (
            {"local_users_accounts": [{"name": "alice", "uid": 2001}, {"name": "eve", "uid": 2001}]},
            "local_users_accounts[1].uid 2001 is also the uid of alice",
        ),
        ({"local_users_accounts": [{"name": "root2", "uid": 0}]}, "local_users_accounts[0].uid is 0"),
        ({"local_users_accounts": [{"name": "x", "uid": "2001"}]}, "local_users_accounts[0].uid is '2001'"),
        (
            {"local_users_groups": [{"name": "physics", "gid": 3001}, {"name": "physics", "gid": 3002}]},
            "local_users_groups[1].name 'physics' is listed twice",
        ),
        (
            {"local_users_groups": [{"name": "physics", "gid": 3001}, {"name": "astro", "gid": 3001}]},
            "local_users_groups[1].gid 3001 is also the gid of physics",
        ),
        ({"local_users_groups": [{"name": "has space", "gid": 3001}]}, "local_users_groups[0].name is 'has space'"),
        ({"local_users_groups": [{"name": "sys", "gid": 10}]}, "local_users_groups[0].gid is 10"),
        (
            {
                "local_users_groups": [{"name": "physics", "gid": 2001}],
                "local_users_accounts": [{"name": "alice", "uid": 2001}],
            },
            "local_users_accounts[0] (alice) gets its own group with gid 2001, which is the gid of physics",
        ),
    ],
)
def test_bad_users(users, expected):
    errors = preflight.local_users_errors(users)
    assert len(errors) == 1, errors
    assert errors[0].startswith(expected)


def test_random_keys_are_not_taken_for_placeholders():
    import os

    for _ in range(3000):
        key = base64.b64encode(os.urandom(256)).decode()
        assert (
            preflight.htcondor_settings_errors({**GOOD_HTCONDOR, "signing_key_b64": key}, parts(GOOD_GROUPS), GROUP_OF)
            == []
        )


@pytest.mark.parametrize("value", ["host.example.org\n", "alice\n"])
def test_trailing_newline_is_not_a_valid_name(value):
    settings = {**GOOD_HTCONDOR, "trust_domain": value}
    assert preflight.htcondor_settings_errors(settings, parts(GOOD_GROUPS), GROUP_OF)
    assert preflight.local_users_errors({"local_users_accounts": [{"name": value, "uid": 2001}]})


def test_several_problems_are_all_reported():
    settings = {**GOOD_HTCONDOR, "trust_domain": "bad domain", "uid_domain": "", "signing_key_b64": "changeme"}
    assert len(preflight.htcondor_settings_errors(settings, parts(GOOD_GROUPS), GROUP_OF)) == 3


def test_non_mappings_are_refused():
    with pytest.raises(AnsibleFilterError, match="expected a mapping"):
        preflight.condorlab_inventory_errors(["cm"], GROUP_OF)
    with pytest.raises(AnsibleFilterError, match="expected a mapping"):
        preflight.htcondor_settings_errors(GOOD_HTCONDOR, None, GROUP_OF)


def test_filters_are_registered():
    assert set(preflight.FilterModule().filters()) == {
        "condorlab_inventory_errors",
        "htcondor_settings_errors",
        "directory_errors",
        "local_users_errors",
    }
