"""The test bed's users live in a real LDAP directory (slapd on cm): every host resolves them through
SSSD over LDAPS with the certificate checked, the directory shows nothing to anonymous clients, and a
membership change in the directory reaches the hub and the access point's accounting map without a
site.yml run."""

from __future__ import annotations

import json
import time

import pytest
from conftest import _host, hub_client, set_passwords, wait_for

BASE = "dc=condorlab,dc=test"
POOL = ["cm", "hub", "wn1", "wn2"]
CA = "/etc/sssd/condorlab-ldap-ca.crt"
MAP = "/etc/condor/condorlab-accounting.map"


def ldapmodify(cm, ldif: str):
    return cm.run(f"ldapmodify -Q -Y EXTERNAL -H ldapi:/// <<'EOF'\n{ldif}\nEOF")


def membership(cm, change: str, user: str, group: str):
    return ldapmodify(
        cm, f"dn: cn={group},ou=groups,{BASE}\nchangetype: modify\n{change}: memberUid\nmemberUid: {user}\n"
    )


@pytest.mark.parametrize("name", POOL)
def test_each_pool_host_resolves_the_directorys_users_through_sssd(name):
    host = _host(name)
    assert host.check_output("getent -s sss passwd alice") == "alice:*:2001:2001:Alice Liddell:/home/alice:/bin/bash"
    assert host.run("grep -q '^alice:' /etc/passwd").rc == 1, "not a local account"
    assert set(host.check_output("id -Gn erin.lee").split()) == {"erin.lee", "physics"}
    members = host.check_output("getent group physics").split(":")[3].split(",")
    assert {"alice", "bob", "erin.lee"} <= set(members)
    conf = host.file("/etc/sssd/sssd.conf")
    assert (conf.user, conf.group, conf.mode) == ("root", "root", 0o640), "it holds the reader's password"
    text = conf.content_string
    assert "ldap_uri = ldaps://cm" in text and "ldap_tls_reqcert = demand" in text and f"ldap_tls_cacert = {CA}" in text


def test_the_directory_speaks_ldaps_only_checks_certificates_and_hides_from_anonymous(hub, cm, outsider):
    search = f"ldapsearch -x -H ldaps://cm -b {BASE} -LLL '(uid=bob)' uid userPassword"
    anonymous = hub.run(f"LDAPTLS_CACERT={CA} LDAPTLS_REQCERT=demand {search}")
    assert anonymous.rc in (0, 32) and "uid:" not in anonymous.stdout, "anonymous: TLS works, reads nothing"

    # A user binds with her own password and reads entries, but no password...
    password = set_passwords(hub, ["alice"])["alice"]

    def as_alice(ca: str):
        return hub.run(
            f"printf %s '{password}' | LDAPTLS_CACERT={ca} LDAPTLS_REQCERT=demand "
            f"{search} -D uid=alice,ou=people,{BASE} -y /dev/stdin"
        )

    right = as_alice(CA)
    assert right.rc == 0 and "uid: bob" in right.stdout and "userPassword" not in right.stdout, right.stderr
    # ...and with another CA the TLS handshake fails: the certificate is checked.
    wrong = as_alice("/etc/ssl/certs/ca-certificates.crt")
    assert wrong.rc == 255 and "Can't contact LDAP server" in wrong.stderr, wrong.stderr

    # slapd listens for LDAPS only (checked on cm itself, inside the firewall); no LDAPS from
    # outside the pool (the firewall).
    assert cm.run("timeout 5 bash -c '</dev/tcp/127.0.0.1/636'").rc == 0
    assert cm.run("timeout 5 bash -c '</dev/tcp/127.0.0.1/389'").rc != 0
    assert hub.run("timeout 5 bash -c '</dev/tcp/cm/636'").rc == 0
    assert outsider.run("timeout 5 bash -c '</dev/tcp/cm/636'").rc != 0

    # Passwords are stored hashed, and the package's administrator has none left.
    stored = cm.check_output(
        f"ldapsearch -Q -Y EXTERNAL -H ldapi:/// -b uid=alice,ou=people,{BASE} -s base -LLL userPassword"
    )
    assert stored.startswith(f"dn: uid=alice,ou=people,{BASE}\nuserPassword:: e1NTSEF9"), "{SSHA}"
    config = cm.check_output("ldapsearch -Q -Y EXTERNAL -H ldapi:/// -b cn=config -LLL '(olcSuffix=*)' olcRootPW")
    assert "olcRootPW" not in config


def test_a_directory_user_logs_in_with_pam_and_starts_a_session(hub, outsider):
    client = hub_client(outsider, hub, set_passwords(hub, ["carol"]))
    started = client("start", "carol", "180", json.dumps({"profile": "astro/quick"}))
    try:
        assert started["login"] == 200 and "ready_after" in started, started
        assert hub.file("/home/carol").exists, "made at her first session on the hub (pam_mkhomedir)"
        assert hub.file("/home/carol").user == "carol" and hub.file("/home/carol").mode == 0o700
    finally:
        assert "stopped_after" in client("stop", "carol")


def test_a_group_change_in_the_directory_reaches_hub_and_access_point_without_site_yml(hub, cm, outsider, capsys):
    """kim is in the directory but in no user group: refused; added to physics in the directory she
    can start a session within the timer's period; removed, she no longer can."""
    timer = hub.file("/etc/systemd/system/condorlab-membership.timer").content_string
    every = next(line.split("=")[1] for line in timer.splitlines() if line.startswith("OnUnitActiveSec="))
    sssd = hub.file("/etc/sssd/sssd.conf").content_string
    cache = next(line.split("=")[1].strip() for line in sssd.splitlines() if line.startswith("entry_cache_timeout"))
    kim = hub_client(outsider, hub, set_passwords(hub, ["kim"]))
    assert kim("login", "kim")["login"] == 403, "no user group: no login"
    assert "* kim " not in hub.file(MAP).content_string
    submit = (
        'su - kim -c \'printf "executable=/bin/true\\naccounting_group=group_physics\\nqueue\\n" | '
        "condor_submit -terse -'"
    )
    added = time.monotonic()
    assert membership(cm, "add", "kim", "physics").rc == 0
    try:
        assert wait_for(lambda: "* kim group_physics" in hub.file(MAP).content_string, timeout=300, interval=2)
        in_map = time.monotonic() - added
        # Her login asks NSS for her groups (os.getgrouplist), which SSSD caches on its own.
        assert wait_for(lambda: kim("login", "kim")["login"] == 200, timeout=240, interval=5)
        started = kim("start", "kim", "180", json.dumps({"profile": "physics/small"}))
        assert started["login"] == 200 and "ready_after" in started, started
        ready = time.monotonic() - added
        ad = json.loads(
            hub.check_output("condor_q -all -json -constraint 'Owner == \"kim\"' -attributes AccountingGroup")
        )
        assert ad[0]["AccountingGroup"] == "group_physics.kim"
        assert "stopped_after" in kim("stop", "kim")
        # Her batch jobs may use physics' account too (the refusal below is the map's, not su's).
        accepted = hub.run(submit)
        assert accepted.rc == 0, accepted.stderr
        hub.check_output(f"condor_rm {accepted.stdout.strip().split()[0]}")
    finally:
        removed = time.monotonic()
        membership(cm, "delete", "kim", "physics")
    assert wait_for(lambda: "* kim " not in hub.file(MAP).content_string, timeout=300, interval=2)
    out_of_map = time.monotonic() - removed
    refused = hub.run(submit)
    assert refused.rc != 0, "the access point refuses her jobs on physics' account"
    assert wait_for(lambda: kim("login", "kim")["login"] == 403, timeout=120, interval=5), "and the hub her login"
    journal = hub.check_output("journalctl -u condorlab-membership --no-pager -o cat | grep 'map changed' | tail -2")
    assert "added ['kim']" in journal and "removed ['kim']" in journal
    with capsys.disabled():
        print(
            f"\n[directory] timer every {every}, SSSD cache {cache} s: added to physics -> in the map {in_map:.1f} s, "
            f"session ready {ready:.1f} s; removed -> out of the map {out_of_map:.1f} s"
        )
