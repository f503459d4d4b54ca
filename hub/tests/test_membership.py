"""The accounting map follows the Unix groups' members and is rewritten only when they changed."""

from __future__ import annotations

import json
import os

import pytest
from condorlab import membership

GROUPS = [
    {"name": "physics", "unix_groups": ["physics"], "accounting_group": "group_physics", "profiles": []},
    {"name": "astro", "unix_groups": ["astro", "astro-guests"], "accounting_group": "group_astro", "profiles": []},
]


def test_each_user_gets_the_groups_of_their_unix_groups_default_first():
    allowed, skipped = membership.accounting(GROUPS, {"physics": ["bob", "alice"], "astro-guests": ["alice", "carol"]})
    assert allowed == {"alice": ["group_physics", "group_astro"], "bob": ["group_physics"], "carol": ["group_astro"]}
    assert skipped == []
    assert membership.map_lines(allowed) == [
        "* alice group_physics,group_astro",
        "* bob group_physics",
        "* carol group_astro",
    ]


def test_names_a_map_line_or_the_hub_cannot_take_are_skipped_with_the_reason():
    allowed, skipped = membership.accounting(GROUPS, {"physics": ["alice", "x y", "Admin", "host$", 7]})
    assert allowed == {"alice": ["group_physics"]}
    assert [(s[0], s[2]) for s in skipped] == [
        ("x y", "invalid"),
        ("Admin", "not-a-hub-user"),
        ("host$", "not-a-hub-user"),
        (7, "invalid"),
    ]
    assert [s.invalid for s in skipped] == [True, False, False, True]


def test_the_map_text_reads_back():
    allowed = {"erin.lee": ["group_physics"], "alice": ["group_physics", "group_astro"]}
    text = membership.map_text(allowed)
    assert text.startswith("# ") and text.endswith("* erin.lee group_physics\n")
    assert membership.read_map(text) == allowed


def test_sync_writes_only_a_change_and_says_who(tmp_path):
    path = tmp_path / "map"
    first = membership.sync(str(path), GROUPS, {"physics": ["alice", "bob"]})
    assert first["changed"] and first["added"] == ["alice", "bob"] and first["removed"] == []
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    written = path.read_text()
    assert membership.read_map(written) == {"alice": ["group_physics"], "bob": ["group_physics"]}

    again = membership.sync(str(path), GROUPS, {"physics": ["bob", "alice"]})
    assert not again["changed"] and path.read_text() == written

    # bob leaves physics and joins astro; carol joins physics.
    moved = membership.sync(str(path), GROUPS, {"physics": ["alice", "carol"], "astro": ["bob"]})
    assert moved["changed"] and moved["added"] == ["carol"] and moved["removed"] == [] and moved["regrouped"] == ["bob"]
    left = membership.sync(str(path), GROUPS, {"physics": ["alice"]}, check=True)
    assert left["changed"] and left["removed"] == ["bob", "carol"]
    assert "carol" in path.read_text(), "check mode writes nothing"


def test_main_reconfigures_only_after_a_change(tmp_path, monkeypatch, capsys):
    groups_file = tmp_path / "user-groups.json"
    groups_file.write_text(json.dumps(GROUPS))
    path = tmp_path / "map"
    members = {"physics": ["alice"]}
    monkeypatch.setattr(membership, "members_here", lambda names: members)
    marker = tmp_path / "reconfigured"
    command = f"touch {marker}"
    args = ["--map", str(path), "--user-groups", str(groups_file), "--reconfig", command]

    assert membership.main(args) == 0
    assert marker.exists() and json.loads(capsys.readouterr().out)["added"] == ["alice"]
    marker.unlink()
    assert membership.main(args) == 0
    assert not marker.exists(), "no change, no reconfig"
    members["physics"] = []
    assert membership.main([*args, "--check"]) == 0
    assert not marker.exists() and "alice" in path.read_text()
    assert membership.main(args) == 0
    assert marker.exists() and "alice" not in path.read_text()


def test_a_failed_reconfig_puts_the_old_map_back_so_the_next_run_retries(tmp_path, monkeypatch):
    groups_file = tmp_path / "user-groups.json"
    groups_file.write_text(json.dumps(GROUPS))
    path = tmp_path / "map"
    members = {"physics": ["alice"]}
    monkeypatch.setattr(membership, "members_here", lambda names: members)
    args = ["--map", str(path), "--user-groups", str(groups_file), "--reconfig"]
    assert membership.main([*args, "false"]) == 1
    assert not path.exists(), "there was none before"
    assert membership.main([*args, "true"]) == 0
    before = path.read_text()
    members["physics"] = ["alice", "bob"]
    assert membership.main([*args, "false"]) == 1
    assert path.read_text() == before
    assert membership.main([*args, "true"]) == 0 and "* bob group_physics" in path.read_text()


def test_an_unresolvable_group_leaves_the_map_alone(tmp_path, monkeypatch):
    groups_file = tmp_path / "user-groups.json"
    groups_file.write_text(json.dumps(GROUPS))
    path = tmp_path / "map"
    path.write_text(membership.map_text({"alice": ["group_physics"]}))

    def directory_away(names):
        raise membership.UnknownGroups("physics")

    monkeypatch.setattr(membership, "members_here", directory_away)
    args = ["--map", str(path), "--user-groups", str(groups_file), "--reconfig", "false"]
    assert membership.main(args) == 1
    assert "* alice group_physics" in path.read_text()


def test_members_here_reads_nss(monkeypatch):
    import grp
    import pwd

    monkeypatch.setattr(
        grp,
        "getgrnam",
        lambda name: {"physics": grp.struct_group(("physics", "x", 3001, ["alice"]))}[name],
    )
    monkeypatch.setattr(
        pwd,
        "getpwall",
        lambda: [
            pwd.struct_passwd(("erin", "x", 2010, 3001, "", "/home/erin", "/bin/sh")),
            pwd.struct_passwd(("alice", "x", 2001, 3001, "", "/home/alice", "/bin/sh")),
            pwd.struct_passwd(("root", "x", 0, 0, "", "/root", "/bin/sh")),
        ],
    )
    assert membership.members_here(["physics"]) == {"physics": ["alice", "erin"]}
    with pytest.raises(membership.UnknownGroups, match="gone"):
        membership.members_here(["physics", "gone"])
