#!/usr/bin/env bash
# Benchmark: time from a session start request to a ready lab, and from a stop
# request to the job leaving the queue, measured from the demo's outsider host
# through the hub's web API. Prints each run and the medians.
#
# Usage: testbed/bench-session-start.sh [RUNS] [USER]   (after `make demo`)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
runs=${1:-5}
user=${2:-alice}
prefix=condorlab-demo
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}

[[ $(id -u) -eq 0 ]] || { echo "bench: must run as root (rootful podman)" >&2; exit 1; }
podman container exists "$prefix-outsider" || { echo "bench: no demo test bed; run 'make demo' first" >&2; exit 1; }
password=$(awk -F: -v u="$user" '$1 == u {print $2}' "$here/.demo-logins" 2>/dev/null || true)
[[ -n $password ]] || { echo "bench: no demo password for $user; run 'make demo' again" >&2; exit 1; }

podman cp "$here/../molecule/default/tests/hubclient.py" "$prefix-outsider:/tmp/hubclient.py"
podman exec "$prefix-hub" cat /etc/condorlab/public-tls/ca.crt \
  | podman exec -i "$prefix-outsider" sh -c 'cat > /tmp/condorlab-public-ca.crt'
client() { podman exec "$prefix-outsider" python3 /tmp/hubclient.py "$@"; }
client stop "$user" "$password" >/dev/null

starts=() stops=()
for i in $(seq "$runs"); do
  start=$(client start "$user" "$password" 300)
  ready=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["ready_after"], 2))' <<<"$start" 2>/dev/null) \
    || { echo "bench: run $i did not become ready: $start" >&2; exit 1; }
  stop=$(client stop "$user" "$password")
  stopped=$(python3 -c 'import json,sys; print(round(json.load(sys.stdin)["stopped_after"], 2))' <<<"$stop")
  echo "run $i: start->ready ${ready} s, stop->gone ${stopped} s"
  starts+=("$ready") stops+=("$stopped")
done
python3 - "${starts[*]}" "${stops[*]}" <<'PY'
import statistics, sys
starts = [float(x) for x in sys.argv[1].split()]
stops = [float(x) for x in sys.argv[2].split()]
print(f"median start->ready {statistics.median(starts):.2f} s (min {min(starts):.2f}, max {max(starts):.2f}, n={len(starts)})")
print(f"median stop->gone   {statistics.median(stops):.2f} s")
PY
