"""ldap_entries against an in-memory directory that speaks python-ldap's calls."""

from __future__ import annotations

import sys
import types

import pytest

from .helpers import run_module

module = sys.modules["condorlab_modules_ldap_entries"]


class NoSuchObject(Exception):
    pass


class LDAPError(Exception):
    pass


class FakeDirectory:
    """A directory of dn -> {attribute: [bytes]}; records each write."""

    def __init__(self, entries=None, refuse=False):
        self.entries = {dn: {k: list(v) for k, v in attrs.items()} for dn, attrs in (entries or {}).items()}
        self.writes = []
        self.refuse = refuse
        self.bound = None

    def sasl_non_interactive_bind_s(self, mechanism):
        if self.refuse:
            raise LDAPError("Can't contact LDAP server")
        self.bound = mechanism

    def search_s(self, dn, scope, filterstr, attrs):
        assert scope == "base" and self.bound == "EXTERNAL"
        if dn not in self.entries:
            raise NoSuchObject(dn)
        wanted = {a.lower() for a in attrs}
        return [(dn, {k: v for k, v in self.entries[dn].items() if k.lower() in wanted})]

    def add_s(self, dn, attrs):
        self.writes.append(("add", dn))
        self.entries[dn] = {name: list(values) for name, values in attrs}

    def modify_s(self, dn, changes):
        self.writes.append(("modify", dn))
        entry = self.entries[dn]
        for op, name, values in changes:
            key = next((k for k in entry if k.lower() == name.lower()), name)
            if op == "add":
                entry[key] = entry.get(key, []) + values
            elif values is None:
                entry.pop(key, None)
            else:
                entry[key] = list(values)


@pytest.fixture
def directory(monkeypatch):
    box = {"server": FakeDirectory()}
    fake = types.SimpleNamespace(
        SCOPE_BASE="base",
        MOD_ADD="add",
        MOD_REPLACE="replace",
        NO_SUCH_OBJECT=NoSuchObject,
        LDAPError=LDAPError,
        initialize=lambda uri: box["server"],
    )
    monkeypatch.setattr(module, "ldap", fake)
    return box


BASE = "dc=condorlab,dc=test"
ENTRIES = [
    {"dn": f"ou=groups,{BASE}", "objectClass": ["organizationalUnit"], "attributes": {"ou": "groups"}},
    {
        "dn": f"cn=physics,ou=groups,{BASE}",
        "objectClass": ["posixGroup"],
        "attributes": {"cn": "physics", "gidNumber": "3001", "memberUid": ["alice", "bob"]},
    },
    {
        "dn": f"cn=kim,ou=groups,{BASE}",
        "objectClass": ["posixGroup"],
        "attributes": {"gidNumber": 4012, "memberUid": []},
    },
]


def test_missing_entries_are_added_in_order_and_a_second_run_changes_nothing(directory, capsys):
    failed, result = run_module(module, {"entries": ENTRIES}, capsys)
    assert not failed and result["changed"]
    assert result["added"] == [e["dn"] for e in ENTRIES] and result["modified"] == {}
    server = directory["server"]
    assert [dn for _, dn in server.writes] == [e["dn"] for e in ENTRIES]
    physics = server.entries[f"cn=physics,ou=groups,{BASE}"]
    assert physics["memberUid"] == [b"alice", b"bob"] and physics["objectClass"] == [b"posixGroup"]
    assert "memberUid" not in server.entries[f"cn=kim,ou=groups,{BASE}"], "an empty list adds no attribute"

    server.writes.clear()
    failed, result = run_module(module, {"entries": ENTRIES}, capsys)
    assert not failed and not result["changed"] and server.writes == []


def test_listed_attributes_are_kept_exactly_and_others_left_alone(directory, capsys):
    directory["server"] = FakeDirectory(
        {
            f"ou=groups,{BASE}": {"objectClass": [b"organizationalUnit"], "ou": [b"groups"]},
            f"cn=physics,ou=groups,{BASE}": {
                "objectClass": [b"posixGroup"],
                "cn": [b"physics"],
                "gidnumber": [b"3001"],
                "memberUid": [b"bob", b"mallory"],
                "description": [b"kept"],
            },
            f"cn=kim,ou=groups,{BASE}": {"objectClass": [b"top"], "gidNumber": [b"4012"], "memberUid": [b"eve"]},
        }
    )
    failed, result = run_module(module, {"entries": ENTRIES}, capsys)
    assert not failed and result["changed"] and result["added"] == []
    assert result["modified"] == {
        f"cn=physics,ou=groups,{BASE}": ["memberUid"],
        f"cn=kim,ou=groups,{BASE}": ["objectClass", "memberUid"],
    }
    entries = directory["server"].entries
    physics = entries[f"cn=physics,ou=groups,{BASE}"]
    assert physics["memberUid"] == [b"alice", b"bob"] and physics["description"] == [b"kept"]
    assert physics["gidnumber"] == [b"3001"], "attribute names compare without case"
    kim = entries[f"cn=kim,ou=groups,{BASE}"]
    assert kim["objectClass"] == [b"top", b"posixGroup"] and "memberUid" not in kim


def test_check_mode_reports_and_writes_nothing(directory, capsys):
    failed, result = run_module(module, {"entries": ENTRIES}, capsys, check_mode=True)
    assert not failed and result["changed"] and len(result["added"]) == 3
    assert directory["server"].writes == [] and directory["server"].entries == {}


def test_a_directory_that_cannot_be_reached_fails_with_its_uri(directory, capsys):
    directory["server"] = FakeDirectory(refuse=True)
    failed, result = run_module(module, {"entries": ENTRIES, "server_uri": "ldapi:///"}, capsys)
    assert failed and "ldapi:///" in result["msg"] and "Can't contact" in result["msg"]
    assert result["added"] == []


def test_an_entry_without_object_classes_is_refused_by_name(directory, capsys):
    failed, result = run_module(module, {"entries": [{"dn": f"ou=x,{BASE}"}]}, capsys)
    assert failed and "objectClass" in result["msg"]
