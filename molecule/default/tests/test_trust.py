"""The hosts trust the extra CAs of the inventory: the scenario's own site CA (made in prepare) and
those of the machine running the test bed."""

from __future__ import annotations

import glob
import os
from pathlib import Path

EXTRA_CA = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "extra-ca"


def test_every_extra_ca_is_in_the_system_bundle(cm, hub, execute_nodes):
    wanted = [*sorted(glob.glob("/usr/local/share/ca-certificates/*.crt")), str(EXTRA_CA / "site-ca.crt")]
    for host in [cm, hub, *execute_nodes]:
        installed = host.check_output("ls /usr/local/share/ca-certificates/ | grep '^condorlab-' || true").split()
        assert installed == [f"condorlab-{i}.crt" for i in range(len(wanted))]
        bundle = host.file("/etc/ssl/certs/ca-certificates.crt").content_string
        for path in wanted:
            body = open(path).read().strip().split("-----BEGIN CERTIFICATE-----")[1].split("-----END")[0]
            assert body.strip().splitlines()[1] in bundle


def test_a_certificate_the_site_ca_signed_is_trusted_on_every_host(cm, hub, execute_nodes):
    server = (EXTRA_CA / "server.pem").read_text()
    for host in [cm, hub, *execute_nodes]:
        host.check_output(f"cat > /tmp/site-server.pem <<'EOF'\n{server}EOF")
        verified = host.run("openssl verify /tmp/site-server.pem")
        assert verified.rc == 0 and "OK" in verified.stdout, (host.backend.hostname, verified.stderr)
        # The same certificate without the store is not trusted: the check can fail.
        alone = host.run("openssl verify -no-CApath -no-CAfile /tmp/site-server.pem")
        assert alone.rc != 0
