from __future__ import annotations

import copy
import sys

import pytest
from ansible.errors import AnsibleFilterError

ug = sys.modules["condorlab_filter_user_groups"]

GOOD = [
    {
        "name": "physics",
        "unix_groups": ["physics"],
        "quota": {"dynamic": 0.6},
        "profiles": [
            {"name": "small", "cpus": 1, "memory": "512MB", "walltime": "1h"},
            {"name": "big", "label": "Two CPUs", "cpus": 2, "memory": "1GB", "walltime": "2h30m", "gpus": 0},
        ],
    },
    {
        "name": "astro",
        "unix_groups": ["astro", "astro-guests"],
        "accounting_group": "group_astro",
        "quota": {"static": 4},
        "accept_surplus": False,
        "profiles": [
            {"name": "small", "cpus": 1, "memory": 256, "walltime": "00:30", "requirements": 'OpSys == "LINUX"'}
        ],
    },
]
# The same, normalised once (as playbooks/vars/site.yml makes them for every role).
PROFILES = ug.condorlab_profiles(GOOD)
NODE = {"cpus": 2, "memory": "2GB", "gpus": 0}


@pytest.mark.parametrize(
    ("value", "mb"),
    [("2GB", 2048), ("512MB", 512), ("512M", 512), ("1.5 GiB", 1536), ("1T", 1048576), (300, 300), ("2048KB", 2)],
)
def test_memory_units(value, mb):
    assert ug.condorlab_memory_mb(value) == mb


@pytest.mark.parametrize("value", ["lots", "2 PB", "", "-1GB", True, None, "0MB", "12 GB RAM"])
def test_bad_memory_is_refused(value):
    with pytest.raises(AnsibleFilterError, match="condorlab_memory_mb"):
        ug.condorlab_memory_mb(value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("4h", 14400), ("1h30m", 5400), ("2d", 172800), ("90s", 90), ("01:30:00", 5400), ("00:30", 1800), (600, 600)],
)
def test_walltime_parsing(value, seconds):
    assert ug.condorlab_walltime_seconds(value) == seconds


@pytest.mark.parametrize("value", ["soon", "4 hours", "1h1h", "30s", "h", "1:70", None, 1.5, True])
def test_bad_walltime_is_refused(value):
    with pytest.raises(AnsibleFilterError, match="condorlab_walltime_seconds"):
        ug.condorlab_walltime_seconds(value)


def test_profiles_are_normalised():
    groups = ug.condorlab_profiles(GOOD)
    physics, astro = groups
    assert physics["accounting_group"] == "group_physics"
    # What the central manager's quota knobs need travels in the same form.
    assert physics["quota"] == {"dynamic": 0.6} and physics["accept_surplus"] is True
    assert astro["quota"] == {"static": 4} and astro["accept_surplus"] is False
    assert physics["profiles"][0] == {
        "name": "small",
        "label": "small: 1 CPU, 512 MB, up to 1 h",
        "cpus": 1,
        "memory_mb": 512,
        "gpus": 0,
        "walltime": 3600,
        "requirements": "",
        "fallback": False,
    }
    assert physics["profiles"][1]["label"] == "Two CPUs" and physics["profiles"][1]["walltime"] == 9000
    assert astro["unix_groups"] == ["astro", "astro-guests"] and astro["profiles"][0]["walltime"] == 1800


def test_accounting_map_lines():
    members = {"physics": ["alice", "bob"], "astro": ["carol", "alice"], "astro-guests": []}
    assert ug.condorlab_accounting_map_lines(PROFILES, members) == [
        "* alice group_physics,group_astro",
        "* bob group_physics",
        "* carol group_astro",
    ]


def test_accounting_map_reads_getent_rows():
    members = {"physics": ["x", "3001", "alice,bob"], "astro": None, "astro-guests": ["x", "3003", ""]}
    assert ug.condorlab_accounting_map_lines(PROFILES, members) == ["* alice group_physics", "* bob group_physics"]


def test_accounting_map_counts_primary_group_members():
    members = {"physics": ["x", "3001", "alice"], "astro": ["x", "3002", ""]}
    passwd = {"erin": ["x", "2010", "3001", "", "/home/erin", "/bin/sh"], "frank.smith": ["x", "2011", "3002"]}
    assert ug.condorlab_accounting_map_lines(PROFILES, members, passwd) == [
        "* alice group_physics",
        "* erin group_physics",
        "* frank.smith group_astro",
    ]


def test_accounting_map_refuses_odd_member_names():
    with pytest.raises(AnsibleFilterError, match="is not a Unix user name"):
        ug.condorlab_accounting_map_lines(PROFILES, {"physics": ["alice; rm"]})


def test_group_quota_knobs():
    assert ug.condorlab_group_quota_knobs(ug.condorlab_profiles(GOOD)) == {
        "GROUP_NAMES": ["group_physics", "group_astro"],
        "GROUP_QUOTA_DYNAMIC_group_physics": 0.6,
        "GROUP_ACCEPT_SURPLUS_group_physics": True,
        "GROUP_QUOTA_group_astro": 4,
        "GROUP_ACCEPT_SURPLUS_group_astro": False,
    }


def test_a_good_inventory_has_no_problems():
    assert ug.condorlab_user_groups_errors(GOOD, NODE) == []


def broken(path: str, value):
    """GOOD with one field replaced (path like '0.profiles.1.cpus'); value DELETE removes it."""
    groups = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    target = groups
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    key = int(last) if last.isdigit() else last
    if value is DELETE:
        del target[key]
    else:
        target[key] = value
    return groups


DELETE = object()

# Each malformed inventory, and a piece of the message it must produce.
MALFORMED = [
    ("not-a-list", {"physics": {}}, "must be a list of user groups"),
    ("empty", [], "is empty; define at least one user group"),
    ("group-not-a-mapping", ["physics"], "not a mapping with name, unix_groups and profiles"),
    ("missing-name", broken("0.name", DELETE), "condorlab_user_groups[0].name is None"),
    ("bad-name", broken("0.name", "Physics Group"), "name is 'Physics Group'; use lower-case letters"),
    ("name-ending-in-a-dash", broken("0.name", "phys-"), "name is 'phys-'; use lower-case letters"),
    ("placeholder-name", broken("0.name", "changeme"), "is the placeholder 'changeme'"),
    ("duplicate-name", broken("1.name", "physics"), "'physics' is used by another group"),
    ("unknown-group-field", broken("0.profile", []), "unknown fields ['profile']"),
    ("no-unix-groups", broken("0.unix_groups", []), "unix_groups is []; list the Unix groups"),
    ("bad-unix-group", broken("0.unix_groups", ["phys ics"]), "'phys ics', which is not a Unix group name"),
    ("bad-accounting-group", broken("1.accounting_group", "group.astro"), "accounting_group is 'group.astro'"),
    ("duplicate-accounting-group", broken("1.accounting_group", "group_physics"), "is also the group of physics"),
    ("quota-both", broken("0.quota", {"static": 2, "dynamic": 0.5}), "give either {static: <slots>}"),
    ("quota-dynamic-range", broken("0.quota", {"dynamic": 1.5}), "quota.dynamic is 1.5"),
    ("quota-static-zero", broken("1.quota", {"static": 0}), "quota.static is 0"),
    ("quotas-over-the-pool", broken("1.quota", {"dynamic": 0.5}), "dynamic quotas add up to 1.1"),
    ("bad-surplus", broken("1.accept_surplus", "yes"), "accept_surplus is 'yes'"),
    ("bad-idle-timeout", broken("1.idle_timeout", "a while"), "idle_timeout is 'a while'; give a duration"),
    ("too-short-idle-timeout", broken("0.idle_timeout", "30s"), "idle_timeout is '30s'; give a duration of a minute"),
    ("no-profiles", broken("0.profiles", []), "profiles is []; give the group at least one profile"),
    ("profile-not-a-mapping", broken("0.profiles.0", "small"), "is 'small', not a mapping"),
    ("bad-profile-name", broken("0.profiles.0.name", "Small!"), "name is 'Small!'"),
    ("duplicate-profile", broken("0.profiles.1.name", "small"), "'small' appears twice in the group"),
    ("unknown-profile-field", broken("0.profiles.0.cores", 2), "unknown fields ['cores']"),
    ("zero-cpus", broken("0.profiles.0.cpus", 0), "cpus is 0; give a whole number of CPUs"),
    ("cpus-as-text", broken("0.profiles.0.cpus", "2"), "cpus is '2'"),
    ("bad-memory", broken("0.profiles.0.memory", "a lot"), "memory is 'a lot'"),
    ("negative-gpus", broken("0.profiles.0.gpus", -1), "gpus is -1"),
    ("bad-walltime", broken("0.profiles.0.walltime", "forever"), "walltime is 'forever'"),
    (
        "multi-line-requirements",
        broken("1.profiles.0.requirements", "true\nqueue 100"),
        "requirements must be one line",
    ),
    ("fallback-not-a-bool", broken("0.profiles.0.fallback", "yes"), "fallback is 'yes'"),
    ("html-in-label", broken("0.profiles.1.label", "<script>"), "label must be text"),
    ("too-many-cpus-for-the-nodes", broken("0.profiles.1.cpus", 64), "cpus is 64 but an execute node has 2"),
    ("too-much-memory-for-the-nodes", broken("0.profiles.1.memory", "64GB"), "memory is 64GB but an execute node"),
    ("gpus-the-nodes-lack", broken("0.profiles.1.gpus", 1), "gpus is 1 but an execute node has 0"),
]


@pytest.mark.parametrize(("case", "groups", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_user_groups_are_refused_with_the_field_and_the_fix(case, groups, message):
    problems = ug.condorlab_user_groups_errors(groups, NODE)
    assert problems, case
    assert any(message in problem for problem in problems), problems


def test_every_field_the_filter_knows_is_checked():
    """A field added to GROUP_KEYS or PROFILE_KEYS needs a check whose message names it."""
    named = " ".join(
        p
        for _, groups, _ in MALFORMED
        for p in ug.condorlab_user_groups_errors(groups, NODE)
        if "unknown fields" not in p  # that message lists every field
    )
    unchecked = sorted(key for key in ug.GROUP_KEYS | ug.PROFILE_KEYS if key not in named)
    assert unchecked == []


def test_the_contract_s_facts_reach_the_roles():
    assert ug.condorlab_contract("job_attrs")[:2] == ["CondorlabSession", "CondorlabServer"]
    assert ug.condorlab_contract("user_groups_file") == "/etc/condorlab/user-groups.json"
    with pytest.raises(AnsibleFilterError, match="not one of"):
        ug.condorlab_contract("secrets")


def test_the_map_uses_the_hub_s_user_name_rule():
    assert ug.condorlab_accounting_map_lines(PROFILES, {"physics": ["erin.lee"]}) == ["* erin.lee group_physics"]
    # Names a directory holds but the hub refuses get no accounting group (a warning), and no error.
    assert ug.condorlab_accounting_map_lines(PROFILES, {"physics": ["Erin", "host$", "alice"]}) == [
        "* alice group_physics"
    ]


def test_conversions_refuse_malformed_groups():
    with pytest.raises(AnsibleFilterError, match="condorlab_profiles: condorlab_user_groups\\[0\\]"):
        ug.condorlab_profiles(broken("0.profiles.0.cpus", 0))


def test_accounting_map_text_is_what_the_access_points_timer_writes():
    from condorlab import membership

    text = ug.condorlab_accounting_map_text(PROFILES, {"physics": ["x", "3001", "bob,alice"]})
    assert text == membership.map_text({"alice": ["group_physics"], "bob": ["group_physics"]})
    assert text.endswith("* alice group_physics\n* bob group_physics\n")
    assert ug.condorlab_contract("accounting_map") == membership.ACCOUNTING_MAP
