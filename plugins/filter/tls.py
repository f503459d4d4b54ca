# Copyright: condorlab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for condorlab's internal TLS."""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: condorlab_session_alt_names
short_description: Subject alternative names a session certificate needs to cover the execute nodes
description:
  - JupyterHub makes a session's certificate before HTCondor has chosen the
    execute node, and the proxy checks the node's name against it. This
    filter turns the execute hosts of the inventory into C(DNS:) names for
    C(Spawner.ssl_alt_names), or uses the site's wildcard instead.
  - Short host names get C(domain) appended as a second name when it is set.
  - Refuses names that are not DNS host names and wildcards that are not of
    the form C(*.example.org), naming the bad value.
positional: _input
options:
  _input:
    description: Inventory host names of the execute nodes.
    type: list
    elements: str
    required: true
  wildcard:
    description: A wildcard such as C(*.farm.example.org) covering every execute node; replaces the host list.
    type: str
    default: ""
  domain:
    description: DNS domain appended to short host names, as a second name.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Names for wn1 and wn2
  ansible.builtin.debug:
    msg: "{{ ['wn1', 'wn2'] | condorlab_session_alt_names(domain='farm.example.org') }}"
  # ['DNS:wn1', 'DNS:wn1.farm.example.org', 'DNS:wn2', 'DNS:wn2.farm.example.org']
"""

RETURN = r"""
_value:
  description: Subject alternative names, each C(DNS:name).
  type: list
  elements: str
"""

LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
HOST_NAME = re.compile(rf"^{LABEL}(\.{LABEL})*\.?$")
WILDCARD = re.compile(rf"^\*(\.{LABEL}){{2,}}$")


def condorlab_session_alt_names(hosts, wildcard: str = "", domain: str = "") -> list[str]:
    if wildcard:
        if not isinstance(wildcard, str) or not WILDCARD.match(wildcard):
            raise AnsibleFilterError(
                f"condorlab_session_alt_names: the wildcard (jupyterhub_internal_tls_wildcard) is {wildcard!r}; "
                "give one of the form *.farm.example.org (a leading '*.' and at least two more labels) "
                "that covers every execute node, or leave it empty to name the condor_execute hosts"
            )
        return [f"DNS:{wildcard.lower()}"]
    if domain and (not isinstance(domain, str) or not HOST_NAME.match(domain)):
        raise AnsibleFilterError(
            f"condorlab_session_alt_names: the domain (jupyterhub_internal_tls_domain) is {domain!r}, "
            "not a DNS domain name such as farm.example.org"
        )
    if not isinstance(hosts, (list, tuple)):
        raise AnsibleFilterError(f"condorlab_session_alt_names: expected a list of host names, got {hosts!r}")
    if not hosts:
        raise AnsibleFilterError(
            "condorlab_session_alt_names: no execute hosts; put the execute nodes in the condor_execute group "
            "or set a wildcard"
        )
    names: list[str] = []
    for host in hosts:
        if not isinstance(host, str) or not HOST_NAME.match(host):
            raise AnsibleFilterError(
                f"condorlab_session_alt_names: {host!r} is not a DNS host name; name the execute nodes by the "
                "names HTCondor reports for them, or set a wildcard"
            )
        candidates = [host.lower().rstrip(".")]
        if domain and "." not in candidates[0]:
            candidates.append(f"{candidates[0]}.{domain.lower().rstrip('.')}")
        for name in candidates:
            if f"DNS:{name}" not in names:
                names.append(f"DNS:{name}")
    return names


class FilterModule:
    def filters(self):
        return {"condorlab_session_alt_names": condorlab_session_alt_names}
