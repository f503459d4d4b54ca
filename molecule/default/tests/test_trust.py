"""The hosts trust the extra CAs of the inventory (here: those of the machine running the test bed)."""

from __future__ import annotations

import glob


def test_every_extra_ca_is_in_the_system_bundle(cm, hub, execute_nodes):
    wanted = sorted(glob.glob("/usr/local/share/ca-certificates/*.crt"))
    for host in [cm, hub, *execute_nodes]:
        installed = host.check_output("ls /usr/local/share/ca-certificates/ | grep '^condorlab-' || true").split()
        assert installed == [f"condorlab-{i}.crt" for i in range(len(wanted))]
        bundle = host.file("/etc/ssl/certs/ca-certificates.crt").content_string
        for path in wanted:
            body = open(path).read().strip().split("-----BEGIN CERTIFICATE-----")[1].split("-----END")[0]
            assert body.strip().splitlines()[1] in bundle
