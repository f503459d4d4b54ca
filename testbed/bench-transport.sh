#!/usr/bin/env bash
# What the tunnel transport costs and gives, on the demo:
#   - a lab's kernel round trip of a trivial cell through the proxy (n=100,
#     after 5 to warm up) and the download of a 100 MiB file from it
#     (testbed/bench_lab.py, run on the hub with the hub venv's tornado);
#   - what idle open sessions cost the access point: the proportional set size
#     (PSS) of the hub, the proxy, the tunnel front and the tunnels' processes,
#     and their CPU over BENCH_IDLE seconds (30), with 0, 1, 10 and
#     BENCH_SESSIONS (40) sessions open, per session. For this the bed gets
#     BENCH_SESSIONS - 10 more users (bench01, ...) in its directory and a
#     share that holds them (one core and 12 GB per node, 20 session CPUs per
#     core), through site.yml -e;
#   - start->ready on the busy farm with the share on, with the inventory's
#     own share (testbed/bench-busy.sh with BENCH_PHASES=on: 10 sequential
#     starts, a burst of 8).
# The bed ends as its inventory has it. Prints figures, asserts nothing.
# (README, "Figures", has these against the former direct transport.)
#
# Usage: testbed/bench-transport.sh   (after `make demo`; about 25 minutes)
# On the molecule scenario's hosts instead:
#   BENCH_PREFIX= BENCH_INVENTORY=<molecule inventory> testbed/bench-transport.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=testbed/bench-common.sh
. "$here/bench-common.sh"
idle=${BENCH_IDLE:-30}
sessions=${BENCH_SESSIONS:-40}
users=(alice bob carol erin.lee frank grace heidi ivan judy pat)
for i in $(seq $((sessions - ${#users[@]}))); do users+=("$(printf 'bench%02d' "$i")"); done

field() { python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', 'none'))"; }

podman cp "$here/bench_lab.py" "$(name hub):/tmp/bench_lab.py"
podman cp "$top/molecule/default/tests/hubclient.py" "$(name hub):/tmp/hubclient.py"  # bench_lab imports it

# The settings of the cost runs: the inventory's directory users plus the bench
# users (group physics), and a share that holds every session.
big=$(mktemp --suffix=.json)
python3 - "$top/${inventory%/hosts.yml}/group_vars/all.yml" "${users[@]:10}" >"$big" <<'PY'
import json, sys, yaml
inventory = yaml.safe_load(open(sys.argv[1]))
extra = [{"name": u, "uid": 2100 + i, "groups": ["physics"], "comment": f"Bench user {i}"}
         for i, u in enumerate(sys.argv[2:], 1)]
print(json.dumps({
    "directory_users": inventory["directory_users"] + extra,
    "condorlab_execute_node_size": {"cpus": 2, "memory": "16GB", "gpus": 0},
    "condorlab_interactive_share": {"cpus": 1, "memory": "12GB", "oversubscribe": 20},
}))
PY

declare -A password
stop_all() {
  local u
  for u in "${users[@]}"; do (client stop "$u" "${password[$u]:-none}" >/dev/null 2>&1 || true) & done
  wait
}
start_many() {  # start the sessions of users[from..to), ten at a time
  local i
  for i in $(seq "$1" $(($2 - 1))); do
    (client start "${users[$i]}" "${password[${users[$i]}]}" 300 >/dev/null || true) &
    (((i + 1) % 10 == 0)) && wait
  done
  wait
}
open_sessions() { hub condor_q -all -constraint 'CondorlabSealed =?= true && JobStatus == 2' -af ClusterId | wc -l; }

# PSS (kB) and CPU ticks of the access point's session machinery, per part: the
# hub, the proxy, the tunnel front and every tunnel's processes (the units' cgroups).
# Reading other users' smaps_rollup takes CAP_SYS_PTRACE, which only a
# privileged exec has in the container.
cost() {
  podman exec --privileged "$(name hub)" sh -c '
    part() {
      pss=0; ticks=0; n=0
      for pid in $*; do
        [ -r /proc/$pid/smaps_rollup ] || continue
        pss=$((pss + $(awk "/^Pss:/ {print \$2}" /proc/$pid/smaps_rollup)))
        ticks=$((ticks + $(awk "{print \$14 + \$15}" /proc/$pid/stat)))
        n=$((n + 1))
      done
      echo "$pss $ticks $n"
    }
    procs() { for unit in "$@"; do cat "/sys/fs/cgroup/systemd$(systemctl show -p ControlGroup --value "$unit")/cgroup.procs" 2>/dev/null; done; }
    echo "hub $(part $(procs jupyterhub.service))"
    echo "proxy $(part $(procs condorlab-proxy.service))"
    echo "front $(part $(procs condorlab-tunnel-front.service))"
    echo "tunnels $(part $(procs $(systemctl list-units --plain --no-legend "condorlab-tunnel@*" | cut -d" " -f1)))"'
}
measure() {  # transport sessions: PSS and CPU over $idle s of idle open sessions (shown on stderr; "PSS CPU" on stdout)
  local a b
  sleep 10
  a=$(cost); sleep "$idle"; b=$(cost)
  python3 - "$1" "$2" "$a" "$b" "$idle" "$(getconf CLK_TCK)" <<'PY'
import sys
label, n, a, b, idle, hz = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5]), int(sys.argv[6])
before = {l.split()[0]: list(map(int, l.split()[1:])) for l in a.splitlines()}
after = {l.split()[0]: list(map(int, l.split()[1:])) for l in b.splitlines()}
parts = []
total_pss = total_cpu = 0.0
for name, (pss, ticks, procs) in after.items():
    cpu = (ticks - before.get(name, [0, ticks])[1]) / hz / idle * 100
    total_pss += pss / 1024
    total_cpu += cpu
    parts.append(f"{name} {pss / 1024:.1f} MB/{procs} proc")
print(f"  [{label}] {n} idle sessions: PSS {total_pss:.1f} MB ({', '.join(parts)}), CPU {total_cpu:.2f} % of a core",
      file=sys.stderr)
print(f"{total_pss:.2f} {total_cpu:.3f}")
PY
}

costs() {
  local transport=tunnel token figures=()
  echo "== round trip, download, cost of idle sessions =="
  site -e "@$big"
  passwords "${users[@]}"
  stop_all
  sleep 30  # the hosts' SSSD (cache 30 s) and the hub's membership (every 30 s) see the bench users
  echo "  alice's lab ready after $(client start alice "${password[alice]}" 180 | field ready_after) s"
  token=$(client token alice "${password[alice]}" bench | field token)
  echo "  lab through the proxy: $(hub /opt/condorlab/hub/bin/python3 /tmp/bench_lab.py https://hub.localhost:8443 alice "$token" /etc/condorlab/public-tls/ca.crt 100)"
  stop_all
  figures+=("0 $(measure "$transport" 0)")
  local from=0 to
  for to in 1 10 "$sessions"; do
    start_many "$from" "$to"; from=$to
    local open; open=$(open_sessions)
    figures+=("$open $(measure "$transport" "$open")")
  done
  python3 - "$transport" "${figures[@]}" <<'PY'
import sys
label, rows = sys.argv[1], [list(map(float, r.split())) for r in sys.argv[2:]]
base = rows[0]
for n, pss, cpu in rows[1:]:
    if n:
        print(f"[{label}] per session at {int(n)} open: {(pss - base[1]) / n:.1f} MB PSS, {(cpu - base[2]) / n:.3f} % of a core")
PY
  stop_all
}
busy() {
  echo "== start->ready on the busy farm, share on =="
  site
  BENCH_PHASES=on "$here/bench-busy.sh" | grep -E '^\[|^batch|^interactive|^access'
}

restore() { rm -f "$big"; echo "back to the inventory's settings ..."; stop_all; site; }
trap restore EXIT
costs
trap 'rm -f "$big"' EXIT
busy
