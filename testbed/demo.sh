#!/usr/bin/env bash
# The `make demo` test bed: five podman containers that behave like hosts of a
# small HTCondor site, deployed with site.yml.
#
# Usage: testbed/demo.sh up       create (or reuse) the containers and run site.yml
#        testbed/demo.sh status   show what is running
#        testbed/demo.sh down     remove the containers and their network
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
network=condorlab-demo
prefix=condorlab-demo
hosts=(cm hub wn1 wn2 outsider)
shared_volume=condorlab-demo-shared
# The hub's public port in the test-bed inventory (condorlab_hub_port),
# published on this machine's loopback: https://hub.localhost:8443 and each
# user's lab at https://<user>.labs.localhost:8443 (browsers resolve *.localhost
# to this machine).
public_port=8443
# The test bed's OpenID Connect provider (identity_provider_url), published
# the same way: https://idp.localhost:8444.
idp_port=8444
# How the demo hub logs users in: pam (the directory's passwords through
# SSSD, the default) or oidc (through that provider): make demo LOGIN=oidc.
login=${CONDORLAB_DEMO_LOGIN:-pam}
[[ $login == pam || $login == oidc ]] || { echo "demo: LOGIN is '$login'; use pam or oidc" >&2; exit 1; }
pip_cache=${CONDORLAB_PIP_CACHE:-$HOME/.cache/condorlab-pip}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}

die() { echo "demo: $*" >&2; exit 1; }

preconditions() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (the test bed uses rootful podman); try: sudo make demo"
  command -v podman >/dev/null || die "podman not found; run 'make deps' (apt-get install podman runc debootstrap)"
}

up() {
  preconditions
  command -v ansible-playbook >/dev/null || die "ansible-playbook not found; run 'make deps' and use the Makefile"
  local image
  image=$("$here/build-image.sh")
  podman network exists "$network" || podman network create "$network" >/dev/null
  mkdir -p "$pip_cache"
  for h in "${hosts[@]}"; do
    local name="$prefix-$h"
    if podman container exists "$name"; then
      [[ $(podman inspect -f '{{.State.Running}}' "$name") == true ]] || podman start "$name" >/dev/null
      continue
    fi
    local extra=()
    case $h in
      hub) extra=(-p "127.0.0.1:$public_port:$public_port" -v "$shared_volume:/shared") ;;
      cm) extra=(-p "127.0.0.1:9090:9090" -p "127.0.0.1:$idp_port:$idp_port") ;;
      wn*) extra=(-v "$shared_volume:/shared") ;;
    esac
    podman run -d --name "$name" --hostname "$h" --network "$network" --network-alias "$h" \
      --cap-add NET_ADMIN --systemd always -v "$pip_cache:/root/.cache/pip" "${extra[@]}" \
      "$image" /sbin/init >/dev/null
    echo "demo: started $name ($image)"
  done
  for h in "${hosts[@]}"; do
    podman exec "$prefix-$h" systemctl is-system-running --wait >/dev/null 2>&1 || true
  done
  (cd "$top" && ansible-playbook -i inventories/testbed/hosts.yml testbed/public-names.yml site.yml \
    -e "jupyterhub_authenticator=$login")
  wait_for_pool
  demo_users
  status
}

# The demo users' shared directories (alice's and bob's labs open there,
# carol's work directory travels with her job) and fresh login passwords.
demo_users() {
  podman exec "$prefix-hub" bash -c '
    for u in alice bob; do install -d -o "$u" -g "$u" -m 0700 "/shared/$u"; done' >/dev/null
  local lines="" u pw
  for u in alice bob carol; do
    pw=$(head -c 12 /dev/urandom | base64 | tr -d '/+=' | cut -c1-12)
    lines+="$u:$pw"$'\n'
  done
  printf '%s' "$lines" | "$here/directory-passwords.sh" "$prefix-cm"
  (umask 077 && printf '%s' "$lines" >"$here/.demo-logins")
}

# Daemons advertise themselves a few seconds after a (re)start: wait until the
# collector knows the access point's schedd and a slot of each execute node.
wait_for_pool() {
  local ads
  for _ in $(seq 60); do
    ads=$(podman exec "$prefix-cm" condor_status -any -af MyType Machine 2>/dev/null || true)
    if grep -q '^Scheduler ' <<<"$ads" \
       && grep -q '^Machine wn1' <<<"$ads" && grep -q '^Machine wn2' <<<"$ads"; then
      return 0
    fi
    sleep 2
  done
  echo "demo: the pool is not complete after 120 s; see 'podman exec $prefix-cm condor_status -any'" >&2
  return 1
}

status() {
  preconditions
  echo
  echo "== condorlab demo =="
  podman ps --filter "name=^$prefix-" --format '{{.Names}}\t{{.Status}}' | sed 's/^/  /'
  if podman container exists "$prefix-cm"; then
    echo
    echo "HTCondor pool seen by the central manager (cm):"
    podman exec "$prefix-cm" condor_status -any -af MyType Name 2>/dev/null | sed 's/^/  /' || echo "  (collector not answering)"
    echo
    echo "JupyterHub: https://hub.localhost:$public_port/ (published from the hub container); each user's"
    echo "lab has an origin of its own, e.g. https://alice.labs.localhost:$public_port/user/alice/"
    if podman exec "$prefix-hub" test -f /etc/condorlab/public-tls/ca.crt 2>/dev/null; then
      podman exec "$prefix-hub" cat /etc/condorlab/public-tls/ca.crt > "$here/.demo-ca.crt"
      echo "Its certificate is signed by the demo's own CA: trust $here/.demo-ca.crt in your browser,"
      echo "or try: curl --cacert $here/.demo-ca.crt https://hub.localhost:$public_port/hub/api/"
    fi
    if [[ -f $here/.demo-logins ]]; then
      echo "Demo logins (user:password; alice and bob have a shared area, carol's work travels with her job):"
      sed 's/^/  /' "$here/.demo-logins"
    fi
    echo
    echo "Directory (slapd on cm, LDAPS only; every host resolves its users through SSSD):"
    echo "  podman exec $prefix-cm ldapsearch -Q -Y EXTERNAL -H ldapi:/// -b ou=people,dc=condorlab,dc=test uid"
    echo "OpenID Connect provider (LemonLDAP::NG on cm): https://idp.localhost:$idp_port/.well-known/openid-configuration"
    if podman exec "$prefix-cm" test -f /etc/condorlab/idp-tls/ca.crt 2>/dev/null; then
      podman exec "$prefix-cm" cat /etc/condorlab/idp-tls/ca.crt > "$here/.demo-idp-ca.crt"
      echo "  signed by its own CA: trust $here/.demo-idp-ca.crt in your browser too"
    fi
    authenticator=$(podman exec "$prefix-hub" python3 -c \
      'import json; print(json.load(open("/etc/jupyterhub/condorlab-hub.json"))["login"]["authenticator"])' 2>/dev/null || true)
    if [[ $authenticator == oidc ]]; then
      echo "  The hub sends users there to log in (the same logins). 'make demo' again goes back to PAM."
    else
      echo "  The hub logs users in with PAM; 'make demo LOGIN=oidc' sends them to the provider instead."
    fi
    echo
    echo "Prometheus (on cm; Debian's package has the classic web UI): http://localhost:9090/classic/targets"
    echo "(the hub's metrics are job condorlab-hub), condorlab's alerts at http://localhost:9090/classic/alerts"
    echo
    echo "Try a batch job as the demo user alice on the access point (hub):"
    echo "  podman exec -it $prefix-hub su - alice"
    echo "  condor_run 'hostname; id -un'     # runs as a job on wn1 or wn2"
  fi
  echo
  echo "Remove the test bed with: make clean"
}

down() {
  preconditions
  for h in "${hosts[@]}"; do
    podman rm -f -t 5 "$prefix-$h" >/dev/null 2>&1 || true
  done
  podman network exists "$network" && podman network rm "$network" >/dev/null
  podman volume exists "$shared_volume" && podman volume rm "$shared_volume" >/dev/null
  rm -f "$here/.demo-logins" "$here/.demo-ca.crt"
  echo "demo: test bed removed"
}

case "${1:-}" in
  up) up ;;
  status) status ;;
  down) down ;;
  *) die "usage: $0 up|status|down" ;;
esac
