from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError

layout = sys.modules["condorlab_filter_layout"]
SITE = yaml.safe_load((Path(__file__).resolve().parents[4] / "playbooks" / "vars" / "layout.yml").read_text())


def test_the_site_layout_puts_each_role_on_its_groups():
    site = SITE["condorlab_layout"]
    assert layout.condorlab_roles_on(site, ["condor_execute"]) == [
        "local_users",
        "ca_trust",
        "firewall",
        "sssd",
        "htcondor",
        "singleuser",
        "node_exporter",
    ]
    assert "jupyterhub" in layout.condorlab_roles_on(site, ["jupyterhub"])
    assert layout.condorlab_roles_on(site, ["monitoring"]) == ["firewall", "sssd", "prometheus"]
    assert layout.condorlab_roles_on(site, ["directory"]) == ["firewall", "directory"]
    assert "singleuser" not in layout.condorlab_roles_on(site, ["jupyterhub", "condor_central_manager"])
    assert layout.condorlab_roles_on(site, ["outsider"]) == []


def test_a_layout_that_is_not_role_to_groups_is_refused():
    with pytest.raises(AnsibleFilterError, match="lists of inventory groups"):
        layout.condorlab_roles_on({"htcondor": "condor_execute"}, ["condor_execute"])


def test_share_nodes_are_the_execute_nodes_that_keep_cores():
    hostvars = {
        "wn1": {"condorlab_interactive_share": {"cpus": 1, "memory": "2GB"}},
        "wn2": {"condorlab_interactive_share": {"cpus": 0}},
        "wn3": {},
        "gpu1": {"condorlab_interactive_share": {"cpus": "2"}},
    }
    assert layout.condorlab_share_nodes(["wn1", "wn2", "wn3", "gpu1"], hostvars) == ["wn1", "gpu1"]
    assert layout.condorlab_share_nodes([], hostvars) == []


@pytest.mark.parametrize(
    ("share", "message"),
    [
        ("2 cores", "must be a mapping"),
        ({"cpus": "two"}, r"wn1: condorlab_interactive_share.cpus is 'two'; give a whole number"),
    ],
)
def test_a_malformed_share_names_the_node_and_the_field(share, message):
    with pytest.raises(AnsibleFilterError, match=message):
        layout.condorlab_share_nodes(["wn1"], {"wn1": {"condorlab_interactive_share": share}})
