#!/usr/bin/env bash
# The pool from the lab: figures of alice's lab as the access point of her batch work.
#
#   testbed/bench-lab-pool.sh [RUNS]      (root; make demo first; BENCH_PREFIX= for the molecule bed)
#
# With the pool idle, then with every batch slot busy (pat's queue of 1-CPU
# jobs, as testbed/bench-busy.sh fills it), prints:
# - start->ready of alice's session (RUNS starts), and when its first pool
#   token arrived: the hub's time to issue it (its access log) and how long
#   after the session was ready the lab held it (the lab asks while it starts;
#   the start does not wait for it);
# - condor_q -totals from the lab and on the access point as alice (20 each);
# - idle pool only: condor_submit -> running of a 1-CPU job, from the lab and
#   on the access point, alternately (RUNS each). It waits for the batch
#   negotiator's cycle (HTCondor's default, 60 s), whichever submits; on a busy
#   farm a batch job waits for a slot to free, from the lab as anywhere.
# Asserts nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=testbed/bench-common.sh
. "$here/bench-common.sh"
runs=${1:-5}
user=alice
batch_user=pat

declare -A password
passwords "$user" "$batch_user"
pw=${password[$user]}

stats() {  # label unit values...: median, min-max, n
  python3 - "$@" <<'PY'
import statistics, sys
label, unit, *values = sys.argv[1:]
v = sorted(float(x) for x in values)
print(f"  {label}: median {statistics.median(v):.2f} {unit} (min {v[0]:.2f}, max {v[-1]:.2f}, n={len(v)})")
PY
}
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }

# In the lab's kernel: 20 condor_q -totals, each timed (s); the last line is JSON.
LAB_QUERIES='
import json, subprocess, time
took = []
for _ in range(20):
    began = time.monotonic()
    subprocess.run(["condor_q", "-totals"], check=True, capture_output=True)
    took.append(time.monotonic() - began)
print(json.dumps(took))
'
ap_queries() {
  hub runuser -u "$user" -- python3 -c '
import json, subprocess, time
took = []
for _ in range(20):
    began = time.monotonic()
    subprocess.run(["condor_q", "-totals"], check=True, capture_output=True, cwd="/tmp")
    took.append(time.monotonic() - began)
print(" ".join(str(t) for t in took))'
}
LAB_SUBMIT="import subprocess; print(subprocess.run(['condor_submit', '-terse', '-a', 'executable = /bin/sleep', '-a', 'arguments = 5', '-a', 'transfer_executable = false', '-a', 'should_transfer_files = YES', '-a', 'request_cpus = 1', '-a', 'request_memory = 64', '-a', 'queue', '/dev/null'], check=True, capture_output=True, text=True).stdout.split('.')[0])"
ap_submit() {
  hub runuser -u "$user" -- sh -c "cd /tmp && condor_submit -terse -a 'executable = /bin/sleep' -a 'arguments = 5' \
    -a 'transfer_executable = false' -a 'should_transfer_files = YES' -a 'request_cpus = 1' -a 'request_memory = 64' \
    -a queue /dev/null" | cut -d. -f1
}
until_running() {  # cluster -> seconds from now until the job runs (or has run)
  local began=$EPOCHREALTIME
  for _ in $(seq 600); do
    if [[ -n $(hub condor_q "$1" -constraint 'JobStatus == 2' -af ClusterId) || -n $(hub condor_history "$1" -limit 1 -af ClusterId) ]]; then
      python3 -c "print(round($EPOCHREALTIME - $began, 2))"; return 0
    fi
    sleep 0.25
  done
  echo "bench-lab-pool: job $1 did not run within 150 s" >&2; return 1
}

measure() {  # phase
  local starts=() issue=() after=() i out since
  client stop "$user" "$pw" >/dev/null
  for i in $(seq "$runs"); do
    since=$(hub date '+%Y-%m-%d %H:%M:%S')
    out=$(client start "$user" "$pw" 300)
    starts+=("$(field '["ready_after"]' <<<"$out")")
    # The first token: the hub's time to issue it, and when the lab held it after the session was ready.
    sleep 3
    local log
    log=$(hub journalctl -u jupyterhub --since "$since" --no-pager -o cat)
    issue+=("$(awk '/POST \/hub\/api\/condorlab\/token/ && !n++ {sub(/ms$/, "", $NF); print $NF}' <<<"$log")")
    after+=("$(client run "$user" "$pw" 'import os, time; p = os.path.join(os.environ["_CONDOR_SEC_TOKEN_DIRECTORY"], "session"); print(os.stat(p).st_mtime)' 60 | field '["stdout"]')")
    local ready_at
    ready_at=$(hub journalctl -u jupyterhub --since "$since" --no-pager -o short-unix | awk -v u="User $user took" 'index($0, u) && !n++ {print $1}')
    after[-1]=$(python3 -c "print(round(${after[-1]} - $ready_at, 2))")
    [[ $i -lt $runs ]] && client stop "$user" "$pw" >/dev/null
  done
  echo "$1:"
  stats "start->ready" s "${starts[@]}"
  stats "first token: hub's time to issue it" ms "${issue[@]}"
  stats "first token held by the lab, after the session was ready (negative: before)" s "${after[@]}"
  local lab ap
  lab=$(client run "$user" "$pw" "$LAB_QUERIES" 120 | field '["stdout"].strip().splitlines()[-1]' | python3 -c 'import json,sys; print(" ".join(map(str, json.load(sys.stdin))))')
  ap=$(ap_queries)
  # shellcheck disable=SC2086
  stats "condor_q -totals from the lab" s $lab
  # shellcheck disable=SC2086
  stats "condor_q -totals on the access point" s $ap
  if [[ $1 == idle* ]]; then
    local from_lab=() from_ap=() c
    for i in $(seq "$runs"); do
      c=$(client run "$user" "$pw" "$LAB_SUBMIT" 60 | field '["stdout"].strip()')
      from_lab+=("$(until_running "$c")")
      c=$(ap_submit)
      from_ap+=("$(until_running "$c")")
    done
    stats "condor_submit -> running, from the lab" s "${from_lab[@]}"
    stats "condor_submit -> running, on the access point" s "${from_ap[@]}"
  fi
  client stop "$user" "$pw" >/dev/null
}

echo "bench-lab-pool: $(hub condor_config_val NEGOTIATOR_INTERVAL 2>/dev/null || echo '?') s batch negotiation cycle; lab token lifetime and renewal as the inventory sets them"
hub condor_rm "$batch_user" >/dev/null 2>&1 || true
measure "idle pool"
cluster=$(hub runuser -u "$batch_user" -- sh -c "cd /tmp && condor_submit -terse \
  -a 'executable = /bin/sleep' -a 'arguments = \$RANDOM_INTEGER(30, 90)' -a 'transfer_executable = false' \
  -a 'should_transfer_files = YES' -a 'request_cpus = 1' -a 'request_memory = 64' -a 'queue 400' /dev/null" | cut -d. -f1)
trap 'hub condor_rm "$cluster" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 240); do
  free=$(hub condor_status -constraint 'PartitionableSlot && CondorlabInteractive =!= true' -af Cpus | awk '{s+=$1} END {print s+0}')
  [[ $free -eq 0 ]] && break
  sleep 1
done
[[ $free -eq 0 ]] || { echo "bench-lab-pool: the batch slots did not fill within 240 s" >&2; exit 1; }
measure "busy farm (every batch slot taken by $batch_user, a queue of 400)"
