"""The session contract shared by the hub, the job helper and the inventory's filters."""

from __future__ import annotations

import json
import os

import pytest
from condorlab import contract

GROUPS = [
    {
        "name": "physics",
        "unix_groups": ["physics"],
        "accounting_group": "group_physics",
        "profiles": [
            {"name": "small", "label": "s", "cpus": 2, "memory_mb": 1024, "gpus": 0, "walltime": 3600},
            {"name": "gpu", "label": "g", "cpus": 4, "memory_mb": 4096, "gpus": 1, "walltime": 60, "priority": 5},
        ],
    },
    {"name": "astro", "unix_groups": ["astro"], "accounting_group": "group_astro", "profiles": []},
]


@pytest.mark.parametrize("name", ["alice", "erin.lee", "_svc", "a-b_c.d", "x" * 32])
def test_user_names_the_directory_has_are_accepted(name):
    assert contract.check_user_name(name) == name


@pytest.mark.parametrize("name", ["", "Alice", ".hidden", "-x", "a b", "a/b", "x" * 33, "a\nb", None, "bob$"])
def test_other_user_names_are_refused_with_the_rule(name):
    with pytest.raises(contract.ContractError, match="lower-case letters, digits"):
        contract.check_user_name(name)


def test_server_keys_and_staging_directories():
    assert contract.server_key("") == "default"
    assert contract.server_key("gpu.2") == "named-gpu.2"
    assert contract.staging_dir("named-gpu.2") == ".condorlab/sessions/named-gpu.2"
    for bad in ("../x", "a/b", "x" * 59):
        with pytest.raises(contract.ContractError):
            contract.server_key(bad)
    for bad in ("../etc", ".hidden", "named-", "default/..", "named-a\nb"):
        with pytest.raises(contract.ContractError, match="bad server name"):
            contract.staging_dir(bad)


@pytest.mark.parametrize(("text", "mb"), [("2GB", 2048), ("512M", 512), ("1.5 GiB", 1536), ("1024", 1024), (300, 300)])
def test_memory_sizes(text, mb):
    assert contract.memory_mb(text) == mb


@pytest.mark.parametrize("text", ["lots", "2PB", "1" * 400, True, "-1GB"])
def test_memory_that_is_not_a_size_is_refused(text):
    with pytest.raises(contract.ContractError, match="is not a size"):
        contract.memory_mb(text)


def test_the_profile_lookup_says_why_a_profile_is_not_offered():
    assert contract.find_profile(GROUPS, {"physics"}, "physics", "gpu")[1]["name"] == "gpu"
    cases = {
        ("astro", "quick"): "you are not in the user group 'astro'",
        ("gw", "x"): "there is no user group 'gw'",
        ("physics", "huge"): "the user group 'physics' has no profile 'huge'",
    }
    for (group, profile), reason in cases.items():
        with pytest.raises(contract.ContractError) as refused:
            contract.find_profile(GROUPS, {"physics"}, group, profile)
        assert "is not one of your groups' profiles (physics/small, physics/gpu)" in str(refused.value)
        assert reason in str(refused.value)
    with pytest.raises(contract.ContractError, match="none of the user groups"):
        contract.find_profile(GROUPS, {"users"}, "physics", "small")


def test_messages_quote_only_a_short_prefix_of_what_a_request_sent():
    assert contract.quoted("gw") == "'gw'"
    assert contract.quoted(8) == "8"
    assert contract.quoted("y" * 100) == f"'{'y' * 40}'... (100 characters)"
    assert contract.quoted(10**5000) == "a int too long to show"
    huge = "g" * 2**20
    for group, profile, cpus, memory in ((huge, huge, None, None), ("physics", "gpu", 10**99, None)):
        with pytest.raises(contract.ContractError) as refused:
            contract.resolve(GROUPS, {"physics"}, group, profile, cpus, memory)
        assert len(str(refused.value)) < 300 and "g" * 41 not in str(refused.value)


@pytest.mark.parametrize(
    ("rule", "good", "bad"),
    [
        (contract.GROUP_NAME, ["physics", "p", "gw-2", "a_b1", "x" * 32], ["Physics", "2gw", "gw-", "x" * 33, "gw\n"]),
        (contract.PROFILE_NAME, ["small", "2gpu", "a-", "x" * 32], ["Small", "-a", "x" * 33, "a/b", "gpu\n", ""]),
    ],
)
def test_the_name_rules_of_user_groups_and_profiles(rule, good, bad):
    assert [name for name in good if not rule.fullmatch(name)] == []
    assert [name for name in bad if rule.fullmatch(name)] == []
    assert contract.PROFILE_KEY_MAX == 65, "the longest group/profile a start request may name"


def test_limits_and_the_session_values():
    session = contract.resolve(GROUPS, {"physics"}, "physics", "gpu", "3", "2GB")
    assert session == {
        "group": "physics",
        "profile": "gpu",
        "label": "g",
        "accounting_group": "group_physics",
        "request_cpus": 3,
        "request_memory_mb": 2048,
        "request_gpus": 1,
        "walltime": 60,
        "priority": 5,  # a profile field the filter adds reaches the template unchanged
    }
    assert contract.resolve(GROUPS, {"physics"}, "physics", "small", None, "")["request_memory_mb"] == 1024
    with pytest.raises(contract.ContractError, match="cpus 5 is outside profile physics/gpu's limit of 1 to 4"):
        contract.resolve(GROUPS, {"physics"}, "physics", "gpu", 5, None)
    with pytest.raises(contract.ContractError, match="memory 8192 MB is above profile physics/gpu's limit"):
        contract.resolve(GROUPS, {"physics"}, "physics", "gpu", None, "8GB")
    with pytest.raises(contract.ContractError, match="not a whole number"):
        contract.resolve(GROUPS, {"physics"}, "physics", "gpu", True, None)


def test_the_user_groups_file_is_read_again_when_it_changes(tmp_path):
    path = tmp_path / "user-groups.json"
    path.write_text(json.dumps(GROUPS))
    assert contract.load_user_groups(str(path))[0]["name"] == "physics"
    path.write_text(json.dumps(GROUPS[1:]))
    os.utime(path, (1, 1))
    assert contract.load_user_groups(str(path))[0]["name"] == "astro"
    path.write_text('{"not": "groups"}')
    os.utime(path, (2, 2))
    with pytest.raises(contract.ContractError, match=r"re-run site\.yml"):
        contract.load_user_groups(str(path))


def test_the_job_attributes_are_named_once():
    assert contract.ATTRS.names() == [
        "CondorlabSession",
        "CondorlabServer",
        "CondorlabGroup",
        "CondorlabProfile",
        "CondorlabWalltime",
        "CondorlabFallback",
    ]
