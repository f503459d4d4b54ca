from __future__ import annotations

import json
import logging
import socket
import threading

import pytest
from ansible.module_utils import firewall_sets as fs

from .fake_nft import FakeNft

POOL = {"v4": "htcondor_v4", "v6": "htcondor_v6", "hosts": ["cm", "wn1"]}
PROXY = {"v4": "sessions_v4", "v6": "sessions_v6", "hosts": ["hub"]}
HOSTS = {"cm": "cm.example.org", "hub": "hub.example.org", "wn1": "wn1.example.org"}
EMPTY_TABLE = {"htcondor_v4": [], "htcondor_v6": [], "sessions_v4": [], "sessions_v6": []}


class Dns:
    """A resolver the test steers: name -> Answer; a name it does not know fails."""

    def __init__(self, **answers: tuple) -> None:
        self.answers = {f"{host}.example.org": fs.Answer(*addresses) for host, addresses in answers.items()}

    def __call__(self, name: str) -> fs.Answer:
        return self.answers.get(name, fs.Answer(error="Name or service not known"))


@pytest.fixture
def bed(tmp_path):
    class Bed:
        nft = FakeNft(tmp_path)
        state = tmp_path / "state"
        config = fs.config_from(HOSTS, [POOL, PROXY], state_dir=str(tmp_path / "state"))

        def sync(self, dns: Dns, check: bool = False) -> fs.Result:
            return fs.sync(self.config, check=check, nft=str(self.nft.path), resolver=dns)

        def known(self) -> dict:
            return json.loads((self.state / fs.ADDRESSES_FILE).read_text())

    Bed.state.mkdir()
    Bed.nft.load(dict(EMPTY_TABLE))
    return Bed()


FIRST = Dns(cm=(("10.0.0.2",),), hub=(("10.0.0.3",), ("fd00::3",)), wn1=(("10.0.0.4",),))


def test_the_first_run_fills_the_sets_in_one_transaction(bed):
    result = bed.sync(FIRST)
    assert result.changed and result.loaded and not result.kept and not result.unknown
    assert bed.nft.sets() == {
        "htcondor_v4": ["10.0.0.2", "10.0.0.4"],
        "htcondor_v6": [],
        "sessions_v4": ["10.0.0.3"],
        "sessions_v6": ["fd00::3"],
    }
    assert len(bed.nft.updates()) == 1
    assert bed.known()["hub"] == {"name": "hub.example.org", "v4": ["10.0.0.3"], "v6": ["fd00::3"]}
    text = (bed.state / fs.SETS_FILE).read_text()
    assert "table inet condorlab {" in text
    assert "\tset htcondor_v4 {\n\t\ttype ipv4_addr\n\t\telements = { 10.0.0.2, 10.0.0.4 }\n\t}" in text
    assert "\tset htcondor_v6 {\n\t\ttype ipv6_addr\n\t}" in text


def test_a_second_run_changes_nothing(bed):
    bed.sync(FIRST)
    calls = len(bed.nft.calls())
    result = bed.sync(FIRST)
    assert not result.changed and not result.changes and not result.moved
    assert len(bed.nft.calls()) == calls + 1, "only the sets were read"


def test_a_new_address_replaces_the_old_one(bed):
    bed.sync(FIRST)
    result = bed.sync(Dns(cm=(("10.0.0.2",),), hub=(("10.0.0.3",), ("fd00::3",)), wn1=(("10.0.0.9",),)))
    assert result.moved == {"wn1": (["10.0.0.4"], ["10.0.0.9"])}
    assert result.changes == {"htcondor_v4": (["10.0.0.2", "10.0.0.4"], ["10.0.0.2", "10.0.0.9"])}
    assert (
        bed.nft.updates()[-1]
        == "flush set inet condorlab htcondor_v4\nadd element inet condorlab htcondor_v4 { 10.0.0.2, 10.0.0.9 }\n"
    )
    assert bed.nft.sets()["htcondor_v4"] == ["10.0.0.2", "10.0.0.9"]
    assert "10.0.0.4" not in (bed.state / fs.SETS_FILE).read_text()


def test_a_name_that_does_not_resolve_keeps_its_last_addresses(bed):
    bed.sync(FIRST)
    result = bed.sync(Dns(cm=(("10.0.0.2",),), hub=(("10.0.0.3",), ("fd00::3",))))
    assert result.kept == [fs.Kept("wn1", "wn1.example.org", "Name or service not known", ("10.0.0.4",))]
    assert not result.changed
    assert bed.nft.sets()["htcondor_v4"] == ["10.0.0.2", "10.0.0.4"]


def test_after_a_reload_an_unresolved_name_gets_its_addresses_from_the_state(bed):
    bed.sync(FIRST)
    bed.nft.load(dict(EMPTY_TABLE))  # a reload without the state file (it is included in the real ruleset)
    result = bed.sync(Dns(cm=(("10.0.0.2",),)))
    assert {kept.host for kept in result.kept} == {"hub", "wn1"}
    assert bed.nft.sets()["htcondor_v4"] == ["10.0.0.2", "10.0.0.4"]
    assert bed.nft.sets()["sessions_v6"] == ["fd00::3"]


def test_a_host_never_resolved_is_reported_and_takes_nothing_out(bed):
    bed.nft.load({**EMPTY_TABLE, "htcondor_v4": ["10.0.0.2", "10.0.0.7"]})
    result = bed.sync(Dns(cm=(("10.0.0.2",),), hub=(("10.0.0.3",),)))
    assert [host.host for host in result.unknown] == ["wn1"]
    assert bed.nft.sets()["htcondor_v4"] == ["10.0.0.2", "10.0.0.7"], "what the set held stays"
    assert "wn1" not in bed.known()


def test_check_mode_changes_nothing(bed):
    result = bed.sync(FIRST, check=True)
    assert result.changed and result.changes["htcondor_v4"] == ([], ["10.0.0.2", "10.0.0.4"])
    assert bed.nft.updates() == [] and list(bed.state.iterdir()) == []


def test_without_the_table_only_the_state_is_written(bed):
    bed.nft.state.unlink()
    result = bed.sync(FIRST)
    assert not result.loaded and result.changed
    assert bed.nft.updates() == []
    assert "elements = { 10.0.0.2, 10.0.0.4 }" in (bed.state / fs.SETS_FILE).read_text()


def test_a_set_the_loaded_ruleset_lacks_waits_for_the_next_load(bed):
    bed.nft.load({"htcondor_v4": [], "htcondor_v6": []})
    result = bed.sync(FIRST)
    assert set(result.changes) == {"htcondor_v4"}
    assert "elements = { 10.0.0.3 }" in (bed.state / fs.SETS_FILE).read_text()


def test_a_failing_nft_leaves_the_state_as_it_was(bed, tmp_path):
    real = bed.nft.path.rename(tmp_path / "nft.real")
    bed.nft.path.write_text(
        f'#!/bin/sh\n[ "$1" = -f ] || exec {real} "$@"\necho "Error: Operation not permitted" >&2\nexit 1\n'
    )
    bed.nft.path.chmod(0o755)
    with pytest.raises(fs.FirewallSetsError, match="could not update the sets: Error: Operation not permitted"):
        bed.sync(FIRST)
    assert list(bed.state.iterdir()) == []


def fake_getaddrinfo(table):
    def getaddrinfo(name, port, family=0, type=0, proto=0, flags=0):
        if name not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, type, 6, "", (a, 0)) for a in table[name]]

    return getaddrinfo


def test_resolve_splits_the_families_and_drops_link_local(monkeypatch):
    table = {"wn1": ["10.0.0.9", "10.0.0.4", "fe80::1%eth0", "fd00::9", "10.0.0.9"]}
    monkeypatch.setattr(fs.socket, "getaddrinfo", fake_getaddrinfo(table))
    assert fs.resolve("wn1") == fs.Answer(("10.0.0.4", "10.0.0.9"), ("fd00::9",))
    assert fs.resolve("gone") == fs.Answer(error="Name or service not known")


def test_resolve_without_a_usable_address_is_a_failure(monkeypatch):
    monkeypatch.setattr(fs.socket, "getaddrinfo", fake_getaddrinfo({"odd": ["fe80::1%eth0"]}))
    assert fs.resolve("odd").error == "no usable address"


def test_the_sets_are_read_from_nft_json():
    text = json.dumps(
        {
            "nftables": [
                {"metainfo": {}},
                {"set": {"name": "a_v4", "elem": ["10.0.0.10", "10.0.0.9"]}},
                {"set": {"name": "a_v6"}},
                {"set": {"name": "b_v4", "elem": [{"elem": {"val": "10.0.0.1", "comment": "x"}}]}},
            ]
        }
    )
    assert fs.sets_from_json(text) == {"a_v4": ["10.0.0.9", "10.0.0.10"], "a_v6": [], "b_v4": ["10.0.0.1"]}
    with pytest.raises(fs.FirewallSetsError, match="no ruleset"):
        fs.sets_from_json("Error")


def test_a_damaged_state_file_is_forgotten(tmp_path, caplog):
    path = tmp_path / "addresses.json"
    path.write_text("{not json")
    assert fs.read_known(str(path)) == {}
    path.write_text(
        json.dumps(
            {
                "wn1": {"name": "wn1", "v4": ["not an address"], "v6": []},
                "cm": {"name": "cm", "v4": ["10.0.0.2"], "v6": []},
            }
        )
    )
    assert list(fs.read_known(str(path))) == ["cm"]


@pytest.mark.parametrize(
    ("hosts", "sets", "table", "message"),
    [
        ({"wn1": "not a name!"}, [], "inet condorlab", "is not a DNS name"),
        (HOSTS, [{"v4": "a b", "v6": "a_v6", "hosts": []}], "inet condorlab", "is not an nftables set name"),
        (HOSTS, [POOL, {**PROXY, "v4": "htcondor_v4"}], "inet condorlab", "named twice"),
        (HOSTS, [{**POOL, "hosts": ["wn7"]}], "inet condorlab", "names wn7, which hosts does not list"),
        (HOSTS, [{"v4": "a_v4"}], "inet condorlab", "needs exactly v4, v6 and hosts"),
        (HOSTS, [], "inet condorlab; flush ruleset", "is not '<family> <name>'"),
    ],
)
def test_bad_configurations_are_refused(hosts, sets, table, message):
    with pytest.raises(fs.FirewallSetsError, match=message):
        fs.config_from(hosts, sets, table)


def test_the_command_logs_what_changed_and_says_when_a_name_never_resolved(bed, tmp_path, monkeypatch, caplog):
    config = tmp_path / "hosts.json"
    config.write_text(
        json.dumps({"table": "inet condorlab", "state_dir": str(bed.state), "hosts": HOSTS, "sets": [POOL, PROXY]})
    )
    table = {"cm.example.org": ["10.0.0.2"], "hub.example.org": ["10.0.0.3"], "wn1.example.org": ["10.0.0.4"]}
    monkeypatch.setattr(fs.socket, "getaddrinfo", fake_getaddrinfo(table))
    caplog.set_level(logging.INFO, logger="condorlab.firewall")
    assert fs.main([str(config), "--nft", str(bed.nft.path)]) == 0
    assert "wn1 resolves to 10.0.0.4 (was nothing)" in caplog.text
    assert "htcondor_v4 holds 10.0.0.2, 10.0.0.4 (was nothing)" in caplog.text

    caplog.clear()
    table["wn1.example.org"] = ["10.0.0.9"]
    del table["hub.example.org"]
    assert fs.main([str(config), "--nft", str(bed.nft.path)]) == 0
    assert "wn1 resolves to 10.0.0.9 (was 10.0.0.4)" in caplog.text
    assert (
        "hub: its name hub.example.org does not resolve (Name or service not known); it keeps 10.0.0.3" in caplog.text
    )

    (bed.state / fs.ADDRESSES_FILE).unlink()
    caplog.clear()
    assert fs.main([str(config), "--nft", str(bed.nft.path)]) == 1
    assert "hub: its name hub.example.org does not resolve (Name or service not known) and no address" in caplog.text
    assert fs.main([str(tmp_path / "missing.json")]) == 2


def test_a_name_without_an_answer_in_time_does_not_hold_up_the_others():
    release = threading.Event()

    def slow(name):
        if name == "slow":
            release.wait(10)
        return fs.Answer(("10.0.0.1",))

    answers = fs.resolve_all(["fast", "slow"], slow, timeout=0.2)
    release.set()
    assert answers == {"fast": fs.Answer(("10.0.0.1",)), "slow": fs.Answer(error="no answer within 0.2 s")}
