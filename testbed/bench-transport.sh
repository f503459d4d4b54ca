#!/usr/bin/env bash
# The tunnel transport against the direct one, on the same machine in the same
# run: for each (the test bed's own, tunnel, first; then site.yml switches it
# with -e condorlab_session_transport=direct, and back at the end):
#   - a lab's kernel round trip of a trivial cell through the proxy (n=100,
#     after 5 to warm up) and the download of a 100 MiB file from it
#     (testbed/bench_lab.py, run on the hub with the hub venv's tornado);
#   - what idle open sessions cost the access point: the proportional set size
#     (PSS) of the hub, the tunnel front and the tunnels' processes, and their
#     CPU over BENCH_IDLE seconds (30), with 0, 1 and N sessions open (N: the
#     bench users, 10), per session;
#   - start->ready on the busy farm with the share on (testbed/bench-busy.sh
#     with BENCH_PHASES=on: 10 sequential starts, a burst of 8).
# Prints figures, asserts nothing.
#
# Usage: testbed/bench-transport.sh   (after `make demo`; about 30 minutes)
# On the molecule scenario's hosts instead:
#   BENCH_PREFIX= BENCH_INVENTORY=<molecule inventory> testbed/bench-transport.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=testbed/bench-common.sh
. "$here/bench-common.sh"
idle=${BENCH_IDLE:-30}
users=(alice bob carol erin.lee frank grace heidi ivan judy pat)

field() { python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', 'none'))"; }

podman cp "$here/bench_lab.py" "$(name hub):/tmp/bench_lab.py"

# Fresh passwords for the bench users (PAM checks them for real).
declare -A password
lines=""
for u in "${users[@]}"; do
  password[$u]=$(head -c 12 /dev/urandom | base64 | tr -d '/+=' | cut -c1-12)
  lines+="$u:${password[$u]}"$'\n'
done
printf "%s" "$lines" | "$here/directory-passwords.sh" "$(name cm)"
stop_all() { for u in "${users[@]}"; do client stop "$u" "${password[$u]}" >/dev/null || true; done; }

# PSS (kB) and CPU ticks of the access point's session machinery: the hub, the
# tunnel front and every tunnel's processes (the units' cgroups).
cost() {
  hub sh -c '
    pids="$(systemctl show -p MainPID --value jupyterhub condorlab-tunnel-front | grep -v "^0$")"
    for unit in $(systemctl list-units --plain --no-legend "condorlab-tunnel@*" | cut -d" " -f1); do
      pids="$pids $(systemctl show -p ControlGroup --value "$unit" | xargs -I{} cat /sys/fs/cgroup/systemd{}/cgroup.procs 2>/dev/null)"
    done
    pss=0; ticks=0; n=0
    for pid in $pids; do
      [ -r /proc/$pid/smaps_rollup ] || continue
      pss=$((pss + $(awk "/^Pss:/ {print \$2}" /proc/$pid/smaps_rollup)))
      ticks=$((ticks + $(awk "{print \$14 + \$15}" /proc/$pid/stat)))
      n=$((n + 1))
    done
    echo "$pss $ticks $n"'
}
measure() {  # label sessions: PSS and CPU over $idle s of idle open sessions
  local label=$1 sessions=$2 a b
  sleep 10
  a=($(cost)); sleep "$idle"; b=($(cost))
  python3 - "$label" "$sessions" "${a[*]}" "${b[*]}" "$idle" "$(getconf CLK_TCK)" <<'PY'
import sys
label, sessions, a, b, idle, hz = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split(), float(sys.argv[5]), int(sys.argv[6])
pss_mb = int(b[0]) / 1024
cpu = (int(b[1]) - int(a[1])) / hz / idle * 100
print(f"  [{label}] {sessions} idle sessions: {b[2]} processes, PSS {pss_mb:.1f} MB, CPU {cpu:.2f} % of a core")
print(f"COST {label} {sessions} {pss_mb:.2f} {cpu:.3f}")
PY
}

bench() {
  local transport=$1 token out base one many
  echo "== $transport =="
  stop_all
  out=$(client start alice "${password[alice]}" 180)
  echo "  alice's lab ready after $(echo "$out" | field ready_after) s"
  token=$(client token alice "${password[alice]}" bench | field token)
  echo "  lab through the proxy: $(hub /opt/condorlab/hub/bin/python3 /tmp/bench_lab.py https://hub.localhost:8443 alice "$token" /etc/condorlab/public-tls/ca.crt 100)"
  stop_all
  base=$(measure "$transport" 0 | tee /dev/stderr | awk '/^COST/ {print $4, $5}')
  client start alice "${password[alice]}" 180 >/dev/null
  one=$(measure "$transport" 1 | tee /dev/stderr | awk '/^COST/ {print $4, $5}')
  for u in "${users[@]}"; do (client start "$u" "${password[$u]}" 240 >/dev/null) & done
  wait
  local open; open=$(hub condor_q -all -constraint 'CondorlabSealed =?= true && JobStatus == 2' -af ClusterId | wc -l)
  many=$(measure "$transport" "$open" | tee /dev/stderr | awk '/^COST/ {print $4, $5}')
  python3 - "$transport" "$base" "$one" "$many" "$open" <<'PY'
import sys
t, base, one, many, n = sys.argv[1], *(list(map(float, v.split())) for v in sys.argv[2:5]), int(sys.argv[5])
print(f"  [{t}] per session at 1: {one[0] - base[0]:.1f} MB PSS, {one[1] - base[1]:.2f} % CPU; "
      f"at {n}: {(many[0] - base[0]) / n:.1f} MB PSS, {(many[1] - base[1]) / n:.3f} % CPU")
PY
  stop_all
  BENCH_PHASES=on "$here/bench-busy.sh" | grep -E '^\[|^batch|^interactive|^access'
}

restore() { echo "switching back to the inventory's transport ..."; stop_all; site; }
bench tunnel
trap restore EXIT
echo "switching to the direct transport (site.yml -e condorlab_session_transport=direct) ..."
site -e condorlab_session_transport=direct
bench direct
