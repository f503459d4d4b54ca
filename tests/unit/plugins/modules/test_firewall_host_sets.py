from __future__ import annotations

import json
import socket
import sys

import pytest

from ..module_utils.fake_nft import FakeNft
from .helpers import run_module

module = sys.modules["condorlab_modules_firewall_host_sets"]
firewall_sets = sys.modules["ansible.module_utils.firewall_sets"]

HOSTS = {"cm": "cm", "wn1": "wn1"}
SETS = [{"v4": "htcondor_v4", "v6": "htcondor_v6", "hosts": ["cm", "wn1"]}]


@pytest.fixture
def dns(monkeypatch):
    table = {"cm": ["10.0.0.2"], "wn1": ["10.0.0.4", "fd00::4"]}

    def getaddrinfo(name, port, family=0, type=0, proto=0, flags=0):
        if name not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, type, 6, "", (a, 0)) for a in table[name]]

    monkeypatch.setattr(firewall_sets.socket, "getaddrinfo", getaddrinfo)
    return table


@pytest.fixture
def nft(tmp_path):
    fake = FakeNft(tmp_path)
    fake.load({"htcondor_v4": [], "htcondor_v6": []})
    return fake


def args(fake, tmp_path, **extra):
    return {"hosts": HOSTS, "sets": SETS, "state_dir": str(tmp_path), "nft": str(fake.path)} | extra


def test_fills_the_sets_then_changes_nothing(dns, nft, tmp_path, capsys):
    failed, result = run_module(module, args(nft, tmp_path), capsys)
    assert not failed and result["changed"]
    assert result["sets"] == {"htcondor_v4": ["10.0.0.2", "10.0.0.4"], "htcondor_v6": ["fd00::4"]}
    assert result["moved"]["wn1"] == {"before": [], "after": ["10.0.0.4", "fd00::4"]}
    assert nft.sets() == result["sets"]
    failed, result = run_module(module, args(nft, tmp_path), capsys)
    assert not failed and not result["changed"] and result["changes"] == {}


def test_a_moved_host_is_reported_with_its_sets(dns, nft, tmp_path, capsys):
    run_module(module, args(nft, tmp_path), capsys)
    dns["wn1"] = ["10.0.0.9"]
    failed, result = run_module(module, args(nft, tmp_path), capsys)
    assert not failed and result["changed"]
    assert result["moved"] == {"wn1": {"before": ["10.0.0.4", "fd00::4"], "after": ["10.0.0.9"]}}
    assert result["changes"]["htcondor_v4"] == {"before": ["10.0.0.2", "10.0.0.4"], "after": ["10.0.0.2", "10.0.0.9"]}
    assert nft.sets() == {"htcondor_v4": ["10.0.0.2", "10.0.0.9"], "htcondor_v6": []}


def test_check_mode_reports_and_changes_nothing(dns, nft, tmp_path, capsys):
    failed, result = run_module(module, args(nft, tmp_path), capsys, check_mode=True)
    assert not failed and result["changed"] and result["sets"]["htcondor_v4"] == ["10.0.0.2", "10.0.0.4"]
    assert nft.sets() == {"htcondor_v4": [], "htcondor_v6": []} and list(tmp_path.glob("*.nft")) == []


def test_check_mode_on_a_host_without_nftables(dns, tmp_path, capsys):
    failed, result = run_module(
        module, args(FakeNft(tmp_path), tmp_path, nft="/nonexistent/nft"), capsys, check_mode=True
    )
    assert not failed and result["changed"] and "nft" in result["msg"]


def test_an_unresolved_name_keeps_its_addresses_with_a_warning(dns, nft, tmp_path, capsys, monkeypatch):
    run_module(module, args(nft, tmp_path), capsys)
    del dns["wn1"]
    warned = []
    monkeypatch.setattr(module.AnsibleModule, "warn", lambda self, text, **_: warned.append(text))
    failed, result = run_module(module, args(nft, tmp_path), capsys)
    assert not failed and not result["changed"]
    assert result["kept"][0]["host"] == "wn1" and result["kept"][0]["addresses"] == ["10.0.0.4", "fd00::4"]
    assert warned == ["wn1: its name wn1 does not resolve here (Name or service not known); it keeps 10.0.0.4, fd00::4"]
    assert nft.sets() == {"htcondor_v4": ["10.0.0.2", "10.0.0.4"], "htcondor_v6": ["fd00::4"]}


def test_a_name_that_never_resolved_fails_with_the_fix(dns, nft, tmp_path, capsys):
    failed, result = run_module(module, args(nft, tmp_path, hosts={"cm": "cm", "wn1": "wn1.invalid"}), capsys)
    assert failed
    assert "no address is known for wn1 (as wn1.invalid: Name or service not known)" in result["msg"]
    assert "firewall_dns_name" in result["msg"]


def test_without_the_table_it_fails(dns, nft, tmp_path, capsys):
    nft.state.unlink()
    failed, result = run_module(module, args(nft, tmp_path), capsys)
    assert failed and "is not loaded; start nftables first" in result["msg"]


def test_bad_sets_are_refused(dns, nft, tmp_path, capsys):
    failed, result = run_module(module, args(nft, tmp_path, sets=[{"v4": "x", "v6": "x", "hosts": []}]), capsys)
    assert failed and "named twice" in result["msg"]
    assert json.dumps(result)
