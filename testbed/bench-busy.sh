#!/usr/bin/env bash
# Benchmark on a 100%-busy farm: every batch slot of the demo busy with
# ordinary batch jobs (1 CPU, 30-90 s each, a queue that outlasts the run, as
# on a farm whose jobs end and are replaced all the time), the batch
# negotiator at HTCondor's defaults. Then:
#   (a) 10 sequential session starts (alice),
#   (b) a burst of 8 concurrent starts by 8 different users,
# first with the interactive share on (as the inventory has it), then with it
# switched off (condorlab_interactive_share.cpus = 0: sessions compete for the
# batch slots, as stock batchspawner's do), in the same invocation; the share
# is switched back on at the end. Prints start->ready per start, the median
# and p95 of each run, and the number of batch jobs that were preempted.
# Asserts nothing.
#
# Usage: testbed/bench-busy.sh   (after `make demo`; takes 40-60 minutes)
# BENCH_START_TIMEOUT (280 s) and BENCH_OFF_START_TIMEOUT (120 s) bound each
# start's wait with the share on and off; BENCH_PHASES=on skips the second.
# On the molecule scenario's hosts instead:
#   BENCH_PREFIX= BENCH_INVENTORY=<molecule inventory> testbed/bench-busy.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=testbed/bench-common.sh
. "$here/bench-common.sh"
users=(alice bob carol erin.lee frank grace heidi ivan)
# The batch load belongs to a user of its own, who starts no session.
batch_user=pat
timeout=${BENCH_START_TIMEOUT:-280}
# With the share off a session waits for a batch slot that HTCondor hands back
# to the negotiator; the schedd keeps reusing its claims for the next batch job
# (CLAIM_WORKLIFE, 20 minutes by default), so most such starts never become
# ready: a shorter wait there keeps the run under an hour.
off_timeout=${BENCH_OFF_START_TIMEOUT:-120}

declare -A password
passwords "${users[@]}"

ready_after() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["ready_after"], 2) if "ready_after" in d else "none")'; }

# Keep every batch slot busy: a queue of 1-CPU jobs of 30-90 s, longer than the
# run, tagged with the phase (preemptions are counted per phase).
fill_batch() {
  hub runuser -u "$batch_user" -- sh -c "cd /tmp && condor_submit -terse \
    -a 'executable = /bin/sleep' -a 'arguments = \$RANDOM_INTEGER(30, 90)' -a 'transfer_executable = false' \
    -a 'should_transfer_files = YES' -a 'request_cpus = 1' -a 'request_memory = 64' \
    -a '+CondorlabBench = \"$1\"' -a 'queue 400' /dev/null" | cut -d. -f1
}
batch_slots_busy() {
  # every batch partitionable slot has no CPU left
  local free
  free=$(hub condor_status -constraint 'PartitionableSlot && CondorlabInteractive =!= true' -af Cpus | awk '{s+=$1} END {print s+0}')
  [[ $free -eq 0 ]]
}
wait_busy() {
  for _ in $(seq 240); do batch_slots_busy && return 0; sleep 1; done
  echo "bench-busy: the batch slots did not fill within 240 s" >&2; return 1
}
preempted() {
  # this phase's batch jobs that started more than once, or were vacated, in the queue and the history
  { hub condor_q -all -constraint "CondorlabBench =?= \"$1\"" -af NumJobStarts NumVacates
    hub condor_history -constraint "CondorlabBench =?= \"$1\"" -af NumJobStarts NumVacates; } |
    awk '($1 > 1) || ($2 != "undefined" && $2 > 0) {n++} END {print n+0}'
}

run_phase() {
  local label=$1 timeout=$2 seq=() burst=() i u out
  echo "== $label =="
  hub condor_rm -constraint 'CondorlabBench isnt undefined' >/dev/null 2>&1 || true
  for u in "${users[@]}"; do client stop "$u" "${password[$u]}" >/dev/null; done
  fill_batch "$label" >/dev/null
  wait_busy
  echo "all batch slots busy ($(hub condor_q -all -constraint 'CondorlabBench isnt undefined && JobStatus == 2' -af ClusterId | wc -l) batch jobs running)"
  for i in $(seq 10); do
    out=$(client start alice "${password[alice]}" "$timeout" | ready_after)
    echo "  sequential $i: start->ready ${out} s"
    seq+=("$out")
    client stop alice "${password[alice]}" >/dev/null
  done
  local dir; dir=$(mktemp -d)
  for u in "${users[@]}"; do
    (client start "$u" "${password[$u]}" "$timeout" | ready_after >"$dir/$u") &
  done
  wait
  for u in "${users[@]}"; do
    out=$(cat "$dir/$u"); echo "  burst $u: start->ready ${out} s"; burst+=("$out")
    client stop "$u" "${password[$u]}" >/dev/null
  done
  rm -rf "$dir"
  local lost; lost=$(preempted "$label")
  python3 - "$label" "${seq[*]}" "${burst[*]}" "$lost" "$timeout" <<'PY'
import statistics, sys
label, seq, burst, lost, timeout = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4], sys.argv[5]
def summary(name, values):
    ready = sorted(float(v) for v in values if v != "none")
    failed = len(values) - len(ready)
    if not ready:
        return f"{name}: none of {len(values)} ready within {timeout} s"
    p95 = ready[min(len(ready) - 1, max(0, round(0.95 * len(ready) + 0.5) - 1))]
    text = f"{name}: median {statistics.median(ready):.2f} s, p95 {p95:.2f} s, min {ready[0]:.2f}, max {ready[-1]:.2f}, n={len(ready)}"
    return text + (f", {failed} not ready within {timeout} s" if failed else "")
print(f"[{label}] " + summary("sequential", seq))
print(f"[{label}] " + summary("burst of 8", burst))
print(f"[{label}] batch jobs preempted: {lost}")
PY
  hub condor_rm -constraint 'CondorlabBench isnt undefined' >/dev/null 2>&1 || true
}

# Wait until the collector shows the share's slots (on) or none of them (off),
# and a batch slot on every execute node.
wait_pool() {
  local want=$1 share batch
  for _ in $(seq 180); do
    share=$(hub condor_status -constraint 'PartitionableSlot && CondorlabInteractive =?= true' -af Machine 2>/dev/null | wc -l)
    batch=$(hub condor_status -constraint 'PartitionableSlot && CondorlabInteractive =!= true' -af Machine 2>/dev/null | wc -l)
    if [[ $batch -ge 2 ]] && { [[ $want == on && $share -ge 2 ]] || [[ $want == off && $share -eq 0 ]]; }; then return 0; fi
    sleep 1
  done
  echo "bench-busy: the pool did not show the share $want within 180 s" >&2; return 1
}

knob() { podman exec "$(name cm)" condor_config_val "$@" 2>/dev/null || echo "HTCondor's default"; }
echo "batch negotiator: NEGOTIATOR_INTERVAL $(knob NEGOTIATOR_INTERVAL), NEGOTIATOR_CYCLE_DELAY $(knob NEGOTIATOR_CYCLE_DELAY)"
echo "interactive negotiator: NEGOTIATOR_INTERVAL $(knob NEGOTIATOR_INTERACTIVE.NEGOTIATOR_INTERVAL), NEGOTIATOR_CYCLE_DELAY $(knob NEGOTIATOR_INTERACTIVE.NEGOTIATOR_CYCLE_DELAY)"
echo "access point: SCHEDD_MIN_INTERVAL $(hub condor_config_val SCHEDD_MIN_INTERVAL 2>/dev/null || echo "HTCondor's default")"
run_phase "share on" "$timeout"
[[ ${BENCH_PHASES:-on,off} == *off* ]] || exit 0
# Whatever happens from here on, the test bed gets its share back.
restore() {
  echo "switching the interactive share back on ..."
  hub condor_rm -constraint 'CondorlabBench isnt undefined' >/dev/null 2>&1 || true
  site && wait_pool on
}
trap restore EXIT
echo "switching the interactive share off (site.yml -e condorlab_interactive_share.cpus=0) ..."
site -e '{"condorlab_interactive_share": {"cpus": 0}}'
wait_pool off
run_phase "share off" "$off_timeout"
