"""Attacks by another user of the batch farm on the site's services: each must fail, while the
legitimate path still works.

bob runs commands on the execute node wn2 as his batch jobs run there (runuser, as in
test_security.py) and tries to query Prometheus and another node's exporter, to read his own
password hash in the directory and more of its root DSE than clients need; the provider's login
page is read as the browsers on the network (the outsider) get it.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex

from conftest import IDP_CA, IDP_HOST, _host, set_passwords, wait_for

BASE = "dc=condorlab,dc=test"
BOB = f"uid=bob,ou=people,{BASE}"
# The directory's CA on every pool host (the sssd role, 0644), as clients check slapd's certificate.
LDAP_ENV = "export LDAPTLS_CACERT=/etc/sssd/condorlab-ldap-ca.crt LDAPTLS_REQCERT=demand\n"
PROVIDER = "https://idp.localhost:8444"
PROMETHEUS = "http://localhost:9090"
# What anyone may read of the root DSE (roles/directory/tasks/tls.yml).
ROOT_DSE_PUBLIC = {
    "objectclass",
    "namingcontexts",
    "supportedcontrol",
    "supportedextension",
    "supportedfeatures",
    "supportedldapversion",
    "supportedsaslmechanisms",
}
BLOCKED = ("timeout", "refused")

# bob, bound as himself ($me) over LDAPS: his own entry with its password asked for, a compare of
# his password, a change of it (old one checked) and binds with the new and the old one, then back.
PASSWORD_CHANGE = """
umask 077
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
printf %s "$old" > "$dir/old"; printf %s "$new" > "$dir/new"
bind="-x -H ldaps://cm -D $me"
echo '== entry'
ldapsearch $bind -y "$dir/old" -b "$me" -s base -LLL '*' userPassword 2>&1 || echo "rc=$?"
echo '== compare'
ldapcompare $bind -y "$dir/old" "$me" "userPassword:$old" 2>&1; echo "rc=$?"
echo '== change'
ldappasswd $bind -y "$dir/old" -t "$dir/old" -T "$dir/new" 2>&1 && echo changed
echo '== new'
ldapwhoami $bind -y "$dir/new" 2>&1 || echo "rc=$?"
echo '== old'
ldapwhoami $bind -y "$dir/old" 2>&1 || echo "rc=$?"
echo '== back'
ldappasswd $bind -y "$dir/new" -t "$dir/new" -T "$dir/old" 2>&1 && echo restored
"""

PROBE = """
import socket, sys
from concurrent.futures import ThreadPoolExecutor

def probe(target):
    name, port = target.rsplit(":", 1)
    try:
        socket.create_connection((name, int(port)), timeout=3).close()
        return target, "open"
    except ConnectionRefusedError:
        return target, "refused"
    except OSError:
        return target, "timeout"

with ThreadPoolExecutor(len(sys.argv) - 1) as pool:
    for target, state in pool.map(probe, sys.argv[1:]):
        print(target, state)
"""


def as_user(host, user: str, script: str):
    """Run a bash script on ``host`` as ``user``, as a job of theirs runs there."""
    return host.run(f"runuser -u {user} -- bash -c {shlex.quote(script)}")


def connections(host, user: str, *targets: str) -> dict[str, str]:
    """From ``host`` as ``user``, TCP connections to host:port targets at once: 'open', 'refused' or 'timeout'."""
    result = as_user(host, user, f"python3 -c {shlex.quote(PROBE)} {' '.join(targets)}")
    assert result.rc == 0, result.stderr
    return dict(line.split() for line in result.stdout.splitlines())


def sections(output: str) -> dict[str, str]:
    """The parts of a script's output, each after its '== name' line."""
    parts: dict[str, str] = {}
    name = ""
    for line in output.splitlines():
        if line.startswith("== "):
            name = line[3:]
            parts[name] = ""
        else:
            parts[name] = parts.get(name, "") + line + "\n"
    return parts


def attribute_names(ldif: str) -> set[str]:
    """The attribute names of an LDIF entry (lower case), its dn left out."""
    names = {line.split(":", 1)[0].lower() for line in ldif.splitlines() if line and line[0] not in " #"}
    return names - {"dn"}


# ---- monitoring ---------------------------------------------------------------


def test_a_job_reaches_neither_prometheus_nor_another_node_s_exporter(execute_nodes, hub, cm):
    node, other = execute_nodes[1], execute_nodes[0]
    own, others = f"{node.backend.name}:9100", f"{other.backend.name}:9100"
    seen = connections(node, "bob", "cm:9090", others, own)
    assert seen["cm:9090"] in BLOCKED, seen
    assert seen[others] in BLOCKED, seen
    # Its own node's exporter answers over loopback: machine-level figures the job reads in /proc
    # and /sys itself (roles/node_exporter/defaults/main.yml).
    assert seen[own] == "open", seen

    # The hub may query Prometheus, and Prometheus still scrapes every target.
    assert connections(hub, "root", "cm:9090") == {"cm:9090": "open"}

    def health() -> dict[str, list[str]]:
        targets = json.loads(cm.check_output(f"curl -sf {PROMETHEUS}/api/v1/targets"))["data"]["activeTargets"]
        jobs: dict[str, list[str]] = {}
        for target in targets:
            jobs.setdefault(target["labels"]["job"], []).append(target["health"])
        return jobs

    # Every node it can reach: wn2 has no inbound path (condorlab_inbound: false).
    expected = {"prometheus": ["up"], "condorlab-hub": ["up"], "node": ["up"] * 3}
    assert wait_for(lambda: health() == expected, 60, interval=3), health()


# ---- directory ----------------------------------------------------------------


def test_bob_reads_no_password_hash_not_even_his_own_but_changes_his_password(hub, execute_nodes):
    node = execute_nodes[1]
    old = set_passwords(hub, ["bob"])["bob"]
    new = secrets.token_urlsafe(12)
    script = LDAP_ENV + f"me={BOB}; old={shlex.quote(old)}; new={shlex.quote(new)}\n" + PASSWORD_CHANGE
    out = sections(as_user(node, "bob", script).stdout)
    try:
        # He reads his own entry, without its password hash...
        assert f"dn: {BOB}" in out["entry"] and "uid: bob" in out["entry"], out
        assert "userpassword" not in attribute_names(out["entry"]), out["entry"]
        # ...and cannot test guesses against it either (no compare: neither TRUE, 6, nor FALSE, 5).
        assert out["compare"].strip().splitlines()[-1] not in ("rc=5", "rc=6"), out["compare"]
        # He changes it with the password-modify operation, the old one checked, and logs in with the new one.
        assert out["change"].strip().endswith("changed"), out["change"]
        assert f"dn:{BOB}" in out["new"].splitlines(), out["new"]
        assert "rc=49" in out["old"], out["old"]
    finally:
        if "restored" not in out.get("back", ""):
            set_passwords(hub, ["bob"])
    assert out["back"].strip().endswith("restored"), out["back"]


def test_anonymous_clients_read_of_the_root_dse_only_what_clients_need(execute_nodes, cm):
    node = execute_nodes[1]
    anonymous = as_user(node, "bob", LDAP_ENV + "ldapsearch -x -H ldaps://cm -b '' -s base -LLL '+' '*'")
    assert anonymous.rc == 0, anonymous.stderr
    names = attribute_names(anonymous.stdout)
    assert f"namingContexts: {BASE}" in anonymous.stdout, anonymous.stdout
    assert "configcontext" not in names and names <= ROOT_DSE_PUBLIC, names - ROOT_DSE_PUBLIC
    # root on the directory host still reads the whole root DSE: the rule hides it, it is there.
    whole = cm.check_output("ldapsearch -Q -Y EXTERNAL -H ldapi:/// -b '' -s base -LLL configContext")
    assert "configContext: cn=config" in whole, whole


# ---- identity provider --------------------------------------------------------


def test_the_provider_s_login_page_offers_nothing_the_site_did_not_enable(outsider):
    ca = _host(IDP_HOST).file(IDP_CA).content_string
    port = PROVIDER.rsplit(":", 1)[1]
    # curl takes any *.localhost name for this host itself: point it at the provider.
    page = outsider.check_output(
        f"cat > /tmp/attack-idp-ca.crt <<'EOF'\n{ca}\nEOF\n"
        f"curl -s -w '\\n%{{http_code}}' --cacert /tmp/attack-idp-ca.crt "
        f"--connect-to idp.localhost:{port}:{IDP_HOST}:{port} {PROVIDER}/"
    )
    html, _, code = page.rpartition("\n")
    assert code == "200" and 'name="password"' in html, page[-2000:]
    links = re.findall(r'href="([^"]*)"', html)
    unwanted = [link for link in links if re.search(r"/(register|resetpwd|certificateReset)\b", link)]
    assert not unwanted, unwanted
    for marker in ("createAccount", "resetPwd", "certificateReset", "checkLastLogins", 'name="checkLogins"'):
        assert marker not in html, marker
