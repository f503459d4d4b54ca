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

# The bench users' passwords (PAM checks them for real), in the associative
# array `password` the caller declares: the demo's own logins where `make demo`
# printed them (testbed/.demo-logins), fresh ones for the others (added to that
# file so the demo's logins keep working), all set in the directory.
passwords() {
  local logins=$here/.demo-logins lines="" fresh="" u p
  [[ -n $prefix ]] || logins=/dev/null
  if [[ -f $logins ]]; then
    while IFS=: read -r u p; do [[ -n $u ]] && password[$u]=$p; done <"$logins"
  fi
  for u in "$@"; do
    if [[ -z ${password[$u]:-} ]]; then
      password[$u]=$(head -c 12 /dev/urandom | base64 | tr -d '/+=' | cut -c1-12)
      fresh+="$u:${password[$u]}"$'\n'
    fi
    lines+="$u:${password[$u]}"$'\n'
  done
  printf "%s" "$lines" | "$here/directory-passwords.sh" "$(name cm)"
  [[ -z $fresh || $logins == /dev/null ]] || (umask 077 && printf "%s" "$fresh" >>"$logins")
}
