#!/usr/bin/env bash
# dtx-bench sweep: every workload at clients 1 4 16 64 256 against a fresh
# local cluster; writes a markdown table (machine, commands, floor) and the
# JSON reports, and draws the throughput/p99-vs-clients picture.
#
#   bench/sweep.sh [--build DIR] [--out DIR] [--duration S] [--participants N]
#                  [--workloads "bank ycsb-a ycsb-b ycsb-f"] [--clients "1 4 16 64 256"]
#                  [--keys N] [--table FILE] [--results FILE]
#
# Defaults: --build build, --out sweep-out (JSON reports and pictures), --duration 10,
# --participants 3, --keys 100000, --table OUT/table.md. Each run is dtx-bench --warmup 2.
# --results FILE (e.g. bench/RESULTS.md) also appends the table there under a dated heading.
# The cluster is started with `dtxctl cluster up` in OUT/cluster and stopped
# at the end (also on failure or Ctrl-C).
set -euo pipefail

build=build
out=sweep-out
duration=10
participants=3
workloads="bank ycsb-a ycsb-b ycsb-f"
clients="1 4 16 64 256"
keys=100000
table=""
results=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --participants) participants=$2; shift 2 ;;
    --workloads) workloads=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --keys) keys=$2; shift 2 ;;
    --table) table=$2; shift 2 ;;
    --results) results=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "sweep.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
table=${table:-$out/table.md}
bench="$build/bench/dtx-bench"
dtxctl="$build/tools/dtxctl"
for b in "$bench" "$dtxctl"; do
  [[ -x $b ]] || { echo "sweep.sh: $b not built" >&2; exit 1; }
done
mkdir -p "$out"
cluster="$out/cluster"
rm -rf "$cluster"
cleanup() { "$dtxctl" cluster down --dir "$cluster" >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM

"$dtxctl" cluster up --dir "$cluster" --participants "$participants" >&2
reports=()
cmds=()
for w in $workloads; do
  first=1
  for c in $clients; do
    json="$out/$w-c$c.json"
    args=(--workload "$w" --cluster "$cluster" --clients "$c" --duration "$duration" --warmup 2 --json "$json" --no-progress)
    if [[ $w == bank ]]; then args+=(--accounts "$keys"); else args+=(--keys "$keys"); fi
    # Load once per workload; the floor once per sweep.
    [[ $first == 1 ]] || args+=(--no-load)
    [[ ${#reports[@]} -gt 0 ]] || args+=(--floor)
    first=0
    echo "== dtx-bench ${args[*]}" >&2
    "$bench" "${args[@]}" >&2 || echo "sweep.sh: run $w c=$c failed (exit $?)" >&2
    if [[ -s $json ]]; then reports+=("$json"); fi
    cmds+=("dtx-bench ${args[*]}")
  done
done

/usr/bin/python3 - "$table" "$participants" "$duration" "${reports[@]}" <<'PY'
import json, os, platform, subprocess, sys
table, participants, duration, paths = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
reps = [json.load(open(p)) for p in paths]
cpu = "?"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
except OSError:
    pass
out = []
out.append(f"Machine: {platform.node()}, {os.cpu_count()} CPUs ({cpu}), kernel {platform.release()}; "
           f"{participants} participants on loopback, {duration} s per point (+2 s warm-up).")
floor = next((r["floor"] for r in reps if r.get("floor")), None)
if floor:
    out.append(f"Floor: append+fdatasync p50 {floor['fsync_p50_us']:.0f} us, loopback RTT p50 "
               f"{floor['rtt_p50_us']:.0f} us; 2PC commit floor {floor['commit_floor_us']:.0f} us "
               f"(2 RTT + 2 fdatasync), transaction floor {floor['tx_floor_us']:.0f} us.")
out.append("2PC tx: committed transactions that wrote on >= 2 participants (total latency); x floor = its p50 / "
           "(3 RTT + 2 fdatasync). Phases are client-side: read = the Gets, commit = the Commit call "
           "(prepare + decision, not split).")
out.append("Command: `" + (reps[0]["command"] if reps else "") + "` (then each workload x clients).")
out.append("")
out.append("| workload | clients | tx/s | not committed | p50 ms | p99 ms | p999 ms | read p50 ms | commit p50 ms | 2PC tx p50 ms (x floor) | load avg |")
out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
for r in reps:
    lat, com, rd = r["latency_us"], r["phases_us"]["commit"], r["phases_us"]["read"]
    t2 = r["phases_us"]["total_2pc"]
    if t2["count"] == 0:
        two = "-"
    elif floor:
        two = f"{t2['p50'] / 1e3:.2f} ({t2['p50'] / floor['tx_floor_us']:.1f}x)"
    else:
        two = f"{t2['p50'] / 1e3:.2f}"
    out.append(f"| {r['workload']} | {r['clients']} | {r['committed_per_s']:.0f} | {100 * r['abort_rate']:.1f}% | "
               f"{lat['p50'] / 1e3:.2f} | {lat['p99'] / 1e3:.2f} | {lat['p999'] / 1e3:.2f} | {rd['p50'] / 1e3:.2f} | "
               f"{com['p50'] / 1e3:.2f} | {two} | {r['machine']['load_average']} |")
open(table, "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
"$bench" plot "${reports[@]}" --out "$out/sweep" >&2 || echo "sweep.sh: plot failed" >&2
echo "table: $table" >&2
if [[ -n $results ]]; then
  { echo; echo "## Sweep, $(date -u '+%Y-%m-%d %H:%M UTC') (bench/sweep.sh)"; echo; cat "$table"; } >> "$results"
  echo "appended to $results" >&2
fi
