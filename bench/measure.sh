#!/usr/bin/env bash
# The measurements of bench/RESULTS.md "Session 2": obs on/off, backup on/off,
# participant kill/restart timeline, coordinator failover (SIGSTOP), open loop near
# saturation, and the four-workload sweep. Run from the repo root on a quiet
# machine:  B=build O=/tmp/meas bench/measure.sh
set -u
B=${B:-build}
O=${O:-/tmp/meas}
rm -rf "$O"; mkdir -p "$O"
D="$B/tools/dtxctl"; X="$B/bench/dtx-bench"
up() { "$D" cluster up --dir "$1" --participants 3 "${@:2}" >/dev/null || { echo "cluster up failed" >&2; exit 1; }; }
down() { "$D" cluster down --dir "$1" >/dev/null 2>&1; }
summ() { /usr/bin/python3 -c "
import json,sys; d=json.load(open(sys.argv[1]))
print(sys.argv[2], 'tx/s %.0f'%d['committed_per_s'], 'p50 %.2f ms'%(d['latency_us']['p50']/1e3), 'p99 %.2f ms'%(d['latency_us']['p99']/1e3), 'cpu/tx %.1f us'%d.get('cpu_per_tx_us',0), 'load', d['machine']['load_average'], 'notc', d['not_committed_by_reason'])" "$1" "$2"; }
echo "== start $(date -u +%T) load $(cat /proc/loadavg)"
# 1. overhead: obs on vs off, alternating
for i in 1 2 3 4 5 6 7; do
  order="on off"; [[ $i -le 3 ]] || order="off on"
  for mode in $order; do
    c="$O/ov-$mode-$i"; if [[ $mode == off ]]; then up "$c" --no-obs; else up "$c"; fi
    "$X" --workload bank --cluster "$c" --clients 64 --duration 10 --warmup 2 --json "$c.json" --no-progress --seed $i >/dev/null 2>&1
    summ "$c.json" "obs-$mode run $i"; down "$c"
  done
done
# 2. backup cost: with vs without, alternating
for i in 1 2; do
  for mode in without with; do
    c="$O/bk-$mode-$i"; if [[ $mode == with ]]; then up "$c" --backup; else up "$c"; fi
    "$X" --workload bank --cluster "$c" --clients 64 --duration 10 --warmup 2 --json "$c.json" --no-progress --seed $i >/dev/null 2>&1
    summ "$c.json" "backup-$mode run $i"; down "$c"
  done
done
# 3. kill/restart timeline
c="$O/kr"; up "$c"
"$X" --workload bank --cluster "$c" --clients 64 --duration 20 --warmup 2 --faults "at 8s kill participant-1; at 15s restart participant-1" --json "$O/kill.json" --no-progress --seed 11 > "$O/kill.out" 2>&1
summ "$O/kill.json" "kill-restart"; grep -A4 "^timeline" "$O/kill.out"; down "$c"
"$X" plot "$O/kill.json" --out "$O/kill" >/dev/null 2>&1
# 4. failover under load (README example), SIGSTOP and SIGKILL of the primary
c="$O/fo"; up "$c" --backup
"$X" --workload bank --cluster "$c" --clients 16 --duration 10 --warmup 1 --faults "at 3s stop coordinator-0; at 6s cont coordinator-0" --json "$O/fo-stop.json" --no-progress > "$O/fo-stop.out" 2>&1
summ "$O/fo-stop.json" "failover-stop"; grep -A3 "^timeline" "$O/fo-stop.out"; "$D" status --dir "$c"; down "$c"
# 5. open loop near saturation: any participant_unavailable without a fault is a false suspicion
c="$O/ol"; up "$c" --backup
"$X" --workload bank --cluster "$c" --rate 4000 --duration 15 --warmup 2 --json "$O/ol.json" --no-progress > "$O/ol.out" 2>&1
summ "$O/ol.json" "open-loop 4000/s"; grep -c "suspected: no heartbeat" "$c"/*/node.log; down "$c"
echo "== sweep $(date -u +%T)"
bash "$(dirname "$0")/sweep.sh" --build "$B" --out "$O/sweep" --duration 8 > "$O/sweep.log" 2>&1; tail -25 "$O/sweep.log"
echo "== end $(date -u +%T)"
