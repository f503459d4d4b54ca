# shellcheck shell=bash
# What the benchmark scripts share (sourced by testbed/bench-*.sh after
# setting `here`): the test bed's containers (BENCH_PREFIX, default the demo's
# condorlab-demo-*; empty for the molecule scenario's), its inventory
# (BENCH_INVENTORY), the hub and the hub client on the outsider, and site.yml.
me=$(basename "$0" .sh)
top=$(cd "$here/.." && pwd)
prefix=${BENCH_PREFIX-condorlab-demo}
inventory=${BENCH_INVENTORY:-inventories/testbed/hosts.yml}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}

[[ $(id -u) -eq 0 ]] || { echo "$me: must run as root (rootful podman)" >&2; exit 1; }
name() { if [[ -n $prefix ]]; then echo "$prefix-$1"; else echo "$1"; fi; }
podman container exists "$(name outsider)" || { echo "$me: no test bed; run 'make demo' first" >&2; exit 1; }

hub() { podman exec "$(name hub)" "$@"; }
client() { podman exec "$(name outsider)" python3 /tmp/hubclient.py "$@"; }
site() { (cd "$top" && ansible-playbook -i "$inventory" site.yml "$@" >/dev/null); }

podman cp "$top/molecule/default/tests/hubclient.py" "$(name outsider):/tmp/hubclient.py"
hub cat /etc/condorlab/public-tls/ca.crt | podman exec -i "$(name outsider)" sh -c 'cat > /tmp/condorlab-public-ca.crt'
