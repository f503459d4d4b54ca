"""The directory role's users and groups become LDAP entries; bad settings are refused by name."""

from __future__ import annotations

import sys

import pytest
from ansible.errors import AnsibleFilterError

directory = sys.modules["condorlab_filter_directory"]
preflight = sys.modules["condorlab_filter_preflight"]

GROUPS = [{"name": "physics", "gid": 3001}, {"name": "astro", "gid": 3002}]
USERS = [
    {"name": "alice", "uid": 2001, "groups": ["physics", "astro"], "comment": "Alice Liddell", "mail": "a@x.test"},
    {"name": "bob", "uid": 2002, "groups": ["physics"]},
    {"name": "kim", "uid": 2012, "gid": 4012, "groups": [], "shell": "/bin/zsh"},
]
GOOD = {"base_dn": "dc=condorlab,dc=test", "reader_dn": "cn=sssd,ou=services,dc=condorlab,dc=test"}


def test_groups_get_their_members_and_each_user_a_group_of_their_own():
    assert directory.condorlab_directory_groups(GROUPS, USERS) == [
        {"name": "physics", "gid": 3001, "members": ["alice", "bob"]},
        {"name": "astro", "gid": 3002, "members": ["alice"]},
        {"name": "alice", "gid": 2001, "members": []},
        {"name": "bob", "gid": 2002, "members": []},
        {"name": "kim", "gid": 4012, "members": []},
    ]


def test_users_become_posix_accounts():
    entries = directory.condorlab_directory_users(USERS)
    assert entries["alice"] == {
        "uid": "alice",
        "cn": "Alice Liddell",
        "sn": "Liddell",
        "displayName": "Alice Liddell",
        "gecos": "Alice Liddell",
        "uidNumber": "2001",
        "gidNumber": "2001",
        "homeDirectory": "/home/alice",
        "loginShell": "/bin/bash",
        "mail": "a@x.test",
    }
    assert entries["kim"]["gidNumber"] == "4012" and entries["kim"]["loginShell"] == "/bin/zsh"
    assert entries["bob"]["cn"] == "bob" and "mail" not in entries["bob"]


def test_malformed_lists_are_refused():
    with pytest.raises(AnsibleFilterError, match="expected a list of mappings with a name"):
        directory.condorlab_directory_users({"alice": 2001})


def test_good_directory_settings():
    assert preflight.directory_errors({**GOOD, "users": USERS, "groups": GROUPS}) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"base_dn": ""},
            "condorlab_directory_base_dn is ''; set it to the directory's naming context in dc= parts only",
        ),
        ({"base_dn": "o=condorlab,c=de"}, "condorlab_directory_base_dn is 'o=condorlab,c=de'"),
        (
            {"reader_dn": "cn=sssd,dc=other"},
            "condorlab_directory_reader_dn is 'cn=sssd,dc=other'; put the reader account under",
        ),
        (
            {"users": [{"name": "zed", "uid": 2099, "groups": ["gw"]}]},
            "directory_users[0] (zed) is in group 'gw', which is not in directory_groups",
        ),
        (
            {"users": [{"name": "zed", "uid": 2001}, {"name": "amy", "uid": 2001}]},
            "uid 2001 is also the uid of zed",
        ),
        (
            {"users": [{"name": "zed", "uid": 3001}]},
            "directory_users[0] (zed) gets its own group with gid 3001, which is the gid of physics",
        ),
    ],
)
def test_bad_directory_settings_are_named(change, message):
    settings = {**GOOD, "users": [], "groups": GROUPS, **change}
    problems = preflight.directory_errors(settings)
    assert any(message in problem for problem in problems), problems


def test_entries_come_branches_first_then_groups_then_users():
    entries = directory.condorlab_directory_entries(USERS, GROUPS, "dc=condorlab,dc=test")
    dns = [e["dn"] for e in entries]
    assert dns[:3] == [f"ou={b},dc=condorlab,dc=test" for b in ("people", "groups", "services")]
    assert dns[3:5] == ["cn=physics,ou=groups,dc=condorlab,dc=test", "cn=astro,ou=groups,dc=condorlab,dc=test"]
    assert dns[-1] == "uid=kim,ou=people,dc=condorlab,dc=test"
    physics = entries[3]
    assert physics["objectClass"] == ["posixGroup"]
    assert physics["attributes"] == {"cn": "physics", "gidNumber": "3001", "memberUid": ["alice", "bob"]}
    kim_group = next(e for e in entries if e["dn"].startswith("cn=kim,"))
    assert kim_group["attributes"]["gidNumber"] == "4012" and kim_group["attributes"]["memberUid"] == []
    alice = next(e for e in entries if e["dn"].startswith("uid=alice,"))
    assert alice["attributes"] == directory.condorlab_directory_users(USERS)["alice"]


def test_entries_need_a_base_dn():
    with pytest.raises(AnsibleFilterError, match="base DN"):
        directory.condorlab_directory_entries(USERS, GROUPS, "")
