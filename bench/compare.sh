#!/usr/bin/env bash
# dtx against PostgreSQL on the same machine in one run (issue 16, "A peer in the same run"):
# the pg2pc anchor's run.sh (2PC by hand over three PostgreSQL 15 servers, and the
# single-node reference) and dtx-bench's bank workload on a fresh local cluster, back to back,
# R times, in one markdown table with the ratios the issue's targets are stated in.
#
#   bench/compare.sh --pg2pc DIR [--build DIR] [--out DIR] [--reps R] [--duration S]
#                    [--warmup S] [--clients N] [--threads "1 64"] [--local-threads "1 4 16 64"]
#                    [--participants-per-tx N] [--results FILE]
#
# --pg2pc DIR   the anchor's directory (run.sh, pg2pc_bench.cpp, ...); required.
# --build DIR   the dtx build (default build): DIR/bench/dtx-bench, DIR/tools/dtxctl.
# --out DIR     where the reports go (default compare-out/<UTC date-time>): report.md (the
#               table, the machine, the commands), each repetition's anchor output and dtx-bench
#               JSON reports and logs.
# --reps R      repetitions (default 3); odd ones run PostgreSQL first, even ones dtx first.
#               The figures are medians over the repetitions, the ratios medians of the
#               per-repetition ratios (with their range).
# --duration S, --warmup S   seconds per run, for both systems (default 10 and 2).
# --clients N   dtx clients and PostgreSQL 2PC threads of the throughput comparison (default 64).
# --threads, --local-threads   the anchor's THREADS (2PC matrix) and LOCAL_THREADS (single node);
#               defaults "1 N" and "1 4 16 64". The single-node peak is the best of those > 1.
# --participants-per-tx N   passed to dtx-bench (default: not passed; about a third of bank
#               transfers then touch one participant only).
# --results FILE   also append a dated section to FILE (bench/RESULTS.md).
#
# Runs as root (the anchor starts PostgreSQL as the postgres user). Each repetition takes about
# 3.5 min with the defaults (see bench/README.md). Everything runs under a temporary directory
# that is removed at the end; on exit, failure or Ctrl-C the script stops what it started.
set -euo pipefail

pg2pc=""
build=build
out=""
reps=3
duration=10
warmup=2
clients=64
threads=""
local_threads="1 4 16 64"
ppt=""
results=""
usage() { sed -n '2,29p' "$0"; }
while [[ $# -gt 0 ]]; do
  [[ $1 == -h || $1 == --help ]] && { usage; exit 0; }
  [[ $# -ge 2 ]] || { echo "compare.sh: $1 needs a value (--help)" >&2; exit 2; }
  case "$1" in
    --pg2pc) pg2pc=$2 ;;
    --build) build=$2 ;;
    --out) out=$2 ;;
    --reps) reps=$2 ;;
    --duration) duration=$2 ;;
    --warmup) warmup=$2 ;;
    --clients) clients=$2 ;;
    --threads) threads=$2 ;;
    --local-threads) local_threads=$2 ;;
    --participants-per-tx) ppt=$2 ;;
    --results) results=$2 ;;
    *) echo "compare.sh: unknown argument '$1' (--help)" >&2; exit 2 ;;
  esac
  shift 2
done
threads=${threads:-"1 $clients"}
# shellcheck disable=SC2086  # the thread lists are words on purpose
for n in "$reps" "$duration" "$warmup" "$clients" $threads $local_threads ${ppt:+"$ppt"}; do
  [[ $n =~ ^[0-9]+$ ]] || { echo "compare.sh: '$n' is not a whole number" >&2; exit 2; }
done
[[ $reps -ge 1 && $duration -ge 1 && $clients -ge 1 ]] \
  || { echo "compare.sh: --reps, --duration and --clients must be at least 1" >&2; exit 2; }

# ------------------------------------------------------------------ what it needs
fail() { echo "compare.sh: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] \
  || fail "must run as root: the anchor's run.sh starts PostgreSQL as the postgres user (sudo bench/compare.sh ...)"
[[ -n $pg2pc ]] || fail "--pg2pc DIR is required: the anchor's directory (run.sh, pg2pc_bench.cpp)"
[[ -f $pg2pc/run.sh ]] || fail "$pg2pc/run.sh not found: --pg2pc names the pg2pc anchor's directory"
pg2pc=$(cd "$pg2pc" && pwd)
pgbin=${PGBIN:-/usr/lib/postgresql/15/bin}
[[ -x $pgbin/initdb && -x $pgbin/pg_ctl ]] \
  || fail "PostgreSQL 15 not found in $pgbin (set PGBIN); on Debian 12: apt-get install postgresql-15 libpq-dev g++"
if ! command -v pg_config >/dev/null || ! command -v g++ >/dev/null || ! dpkg -s libpq-dev >/dev/null 2>&1; then
  fail "the anchor's driver needs pg_config, libpq and g++: apt-get install libpq-dev g++"
fi
id postgres >/dev/null 2>&1 || fail "no postgres user: apt-get install postgresql-15 creates it"
[[ -x /usr/bin/python3 ]] || fail "/usr/bin/python3 not found (it writes the table): apt-get install python3"
bench="$build/bench/dtx-bench"
dtxctl="$build/tools/dtxctl"
for b in "$bench" "$dtxctl"; do
  [[ -x $b ]] || fail "$b not built: scripts/build, or cmake -B $build && cmake --build $build --target dtx-bench dtxctl dtx-participant dtx-coordinator"
done
bench=$(cd "$(dirname "$bench")" && pwd)/dtx-bench
dtxctl=$(cd "$(dirname "$dtxctl")" && pwd)/dtxctl
for port in 55431 55432 55433; do  # the anchor's fixed ports
  if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
    fail "port $port is in use (another pg2pc run?); the anchor needs 55431-55433"
  fi
done
repo=$(cd "$(dirname "$0")/.." && pwd)

t_begin=$(date +%s)
out=${out:-compare-out/$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d /tmp/dtx-compare.XXXXXX)
chmod 755 "$work"  # the postgres user must reach the anchor's data directories under it

# ------------------------------------------------------------------ stopping what it started
child=""    # the running step's `timeout`, leader of its own process group
cluster=""  # the dtx cluster that is up
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $child ]] && kill -0 "$child" 2>/dev/null; then
    kill -TERM -- "-$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  if [[ -n $cluster ]]; then
    "$dtxctl" cluster down --dir "$cluster" >/dev/null 2>&1 || echo "compare.sh: WARNING: could not stop the dtx cluster in $cluster" >&2
  fi
  stop_pg
  rm -rf "$work"
  [[ $rc == 0 ]] || echo "compare.sh: stopped (exit $rc) after stopping what it started; what was written is in $out" >&2
  exit "$rc"
}
# run.sh stops its clusters when it exits by itself (an EXIT trap), not when it is killed
# (Ctrl-C, or our time limit); pg_ctl stops what is left, by its data directory.
stop_pg() {
  local d
  for d in "$work"/pg/n1 "$work"/pg/n2 "$work"/pg/n3; do
    if [[ -f $d/postmaster.pid ]]; then
      runuser -u postgres -- "$pgbin/pg_ctl" -D "$d" -m fast -w -t 60 stop >/dev/null 2>&1 \
        || echo "compare.sh: WARNING: could not stop PostgreSQL in $d" >&2
    fi
  done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# bounded LIMIT_S LOG CMD...: runs CMD with its output in LOG, killed after LIMIT_S seconds.
# `timeout` leads its own process group, so cleanup can end the step and everything under it.
bounded() {
  local limit=$1 logfile=$2 rc=0
  shift 2
  timeout -k 15 "$limit" "$@" >"$logfile" 2>&1 &
  child=$!
  wait "$child" || rc=$?
  child=""
  [[ $rc != 124 ]] || log "timed out after $limit s: $*"
  return "$rc"
}

# ------------------------------------------------------------------ the two systems
n_pg_runs=$(( $(wc -w <<<"$local_threads") + 4 * $(wc -w <<<"$threads") ))
pg_limit=$(( 300 + n_pg_runs * (warmup + duration + 30) ))
dtx_limit=$(( warmup + duration + 120 ))
failures=()
# Commands as recorded: the run's directories as names (DIR: the anchor; WORK: the temporary
# directory; OUT: the output directory), so that no machine's paths end up in bench/RESULTS.md.
pg_cmd="PG2PC_BASE=WORK/pg OUT=OUT/repR/pg THREADS=\"$threads\" LOCAL_THREADS=\"$local_threads\" EXTRAS=0 WARMUP=$warmup DURATION=$duration DIR/run.sh"
dtx_args() {  # dtx_args CLUSTER CLIENTS JSON
  local a=(--workload bank --cluster "$1" --clients "$2" --duration "$duration" --warmup "$warmup"
           --seed 1 --json "$3" --no-progress)
  [[ -z $ppt ]] || a+=(--participants-per-tx "$ppt")
  [[ $2 != 1 ]] || a+=(--floor)
  printf '%s\n' "${a[@]}"
}

run_pg() {  # run_pg REP
  local o="$out/rep$1/pg" rc=0
  mkdir -p "$o"
  log "rep $1/$reps: PostgreSQL anchor (run.sh: ${n_pg_runs} runs of ${warmup}+${duration} s; log $o/run.log)"
  bounded "$pg_limit" "$o/run.log" env PG2PC_BASE="$work/pg" OUT="$o" THREADS="$threads" \
    LOCAL_THREADS="$local_threads" EXTRAS=0 WARMUP="$warmup" DURATION="$duration" \
    PGBIN="$pgbin" bash "$pg2pc/run.sh" || rc=$?
  if [[ $rc != 0 ]]; then
    failures+=("rep $1: the anchor's run.sh exited $rc (rep$1/pg/run.log)")
    log "rep $1: the anchor's run.sh exited $rc; see $o/run.log"
    stop_pg
  fi
}

run_dtx() {  # run_dtx REP
  local c rc args
  for c in 1 "$clients"; do
    rc=0
    cluster="$work/dtx-c$c"
    rm -rf "$cluster"
    mapfile -t args < <(dtx_args "$cluster" "$c" "$out/rep$1/dtx-c$c.json")
    log "rep $1/$reps: dtx bank, $c client(s), fresh cluster of 3 participants"
    bounded 120 "$out/rep$1/dtx-c$c-cluster.log" "$dtxctl" cluster up --dir "$cluster" --participants 3 \
      || { failures+=("rep $1: dtxctl cluster up failed (rep$1/dtx-c$c-cluster.log)"); cluster=""; continue; }
    bounded "$dtx_limit" "$out/rep$1/dtx-c$c.log" "$bench" "${args[@]}" || rc=$?
    [[ $rc == 0 ]] || failures+=("rep $1: dtx-bench with $c client(s) exited $rc (rep$1/dtx-c$c.log)")
    "$dtxctl" cluster down --dir "$cluster" >>"$out/rep$1/dtx-c$c-cluster.log" 2>&1 \
      || failures+=("rep $1: dtxctl cluster down failed (rep$1/dtx-c$c-cluster.log)")
    cluster=""
  done
}

started_utc=$(date -u '+%Y-%m-%d, %H:%M')
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= reps; r++)); do
  mkdir -p "$out/rep$r"
  if ((r % 2)); then run_pg "$r"; run_dtx "$r"; else run_dtx "$r"; run_pg "$r"; fi
done
ended_utc=$(date -u '+%H:%M')

# ------------------------------------------------------------------ the report
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$repo" diff --quiet HEAD 2>/dev/null || commit="$commit (with uncommitted changes)"
build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$build/CMakeCache.txt" 2>/dev/null || true)
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
mapfile -t c1_args < <(dtx_args D 1 OUT/repR/dtx-c1.json)
mapfile -t cn_args < <(dtx_args D "$clients" "OUT/repR/dtx-c$clients.json")
{
  echo "Machine: $(hostname), $(nproc) CPUs ($cpu_model), kernel $(uname -r), $(sed -n 's/^PRETTY_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release);"
  echo "$("$pgbin/postgres" --version); dtx $commit, ${build_type:-unknown} build."
  echo "Run: $started_utc-$ended_utc UTC (load average $load_at_start at the start), $reps repetition$( ((reps == 1)) || echo s);"
  echo "odd ones PostgreSQL first, even ones dtx first; ${warmup} s warm-up + ${duration} s measured per run on both sides."
  echo
  echo "Each repetition:"
  echo
  echo "- PostgreSQL, the pg2pc anchor (its own run.sh; fresh clusters, verified at the end):"
  echo "  \`$pg_cmd\`"
  echo "- dtx, each client count on a fresh TLS cluster:"
  echo "  \`build/tools/dtxctl cluster up --dir D --participants 3\`,"
  echo "  \`build/bench/dtx-bench ${c1_args[*]}\`, \`build/tools/dtxctl cluster down --dir D\`;"
  echo "  the same with \`${cn_args[*]:0:6}\` and without \`--floor\`."
} >"$out/header.md"

/usr/bin/python3 - "$out" "$reps" "$clients" "$threads" "$local_threads" "${failures[@]}" \
  >"$out/table.md" <<'PY'
import json, os, statistics, sys

out, reps, clients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
threads = [int(t) for t in sys.argv[4].split()]
local_threads = [int(t) for t in sys.argv[5].split()]
failures = sys.argv[6:]


def pg_results(rep):
    """The anchor's RESULT lines of one repetition: name -> {key: value}."""
    res = {}
    try:
        lines = open(os.path.join(out, f"rep{rep}", "pg", "raw.txt")).read().splitlines()
    except OSError:
        return res
    for line in lines:
        if not line.startswith("RESULT "):
            continue
        kv = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
        res["fsync" if kv.get("mode") == "fsync" else kv.get("name", "?")] = kv
    return res


def pg_verify(rep):
    try:
        text = open(os.path.join(out, f"rep{rep}", "pg", "verify.txt")).read()
    except OSError:
        return "no verify.txt"
    return "pass" if "VERIFY: PASS" in text else "FAIL"


def dtx_report(rep, c):
    try:
        return json.load(open(os.path.join(out, f"rep{rep}", f"dtx-c{c}.json")))
    except (OSError, ValueError):
        return None


def best(res, names):
    """(tps, name) of the highest committed tx/s among the named runs, or (None, None)."""
    got = [(float(res[n]["tps"]), n) for n in names if n in res and "tps" in res[n]]
    return max(got) if got else (None, None)


def short(name):  # "2pc-p2-gc-T64" -> "p2 gc", "local-T16" -> "T=16"
    if name.startswith("local-T"):
        return "T=" + name[len("local-T"):]
    parts = name.split("-")[1:-1]
    return " ".join(parts) if "gc" in parts else " ".join(parts) + " no-gc"


peak_local_names = [f"local-T{t}" for t in local_threads if t > 1]
def twopc_names(t):
    return [f"2pc-p{p}{gc}-T{t}" for p in (2, 3) for gc in ("", "-gc")]

rows = []  # one per repetition
for rep in range(1, reps + 1):
    pg, c1, cn = pg_results(rep), dtx_report(rep, 1), dtx_report(rep, clients)
    r = {"rep": rep, "verify": pg_verify(rep)}
    r["plain_peak"], r["plain_peak_name"] = best(pg, peak_local_names)
    r["twopc_n"], r["twopc_n_name"] = best(pg, twopc_names(clients))
    r["twopc_1"], r["twopc_1_name"] = best(pg, twopc_names(1))
    r["plain_1"] = float(pg["local-T1"]["tps"]) if "local-T1" in pg else None
    r["plain_1_p50"] = float(pg["local-T1"]["p50_us"]) if "local-T1" in pg else None
    r["twopc_1_p50"] = float(pg[r["twopc_1_name"]]["p50_us"]) if r["twopc_1_name"] else None
    r["pg_floor"] = float(pg["fsync"]["append_p50_us"]) if "fsync" in pg else None
    r["dtx_n"] = cn["committed_per_s"] if cn else None
    r["dtx_n_cpu"] = cn.get("cpu_per_tx_us") if cn else None
    r["dtx_n_2pc"] = None
    if cn and cn.get("committed"):
        r["dtx_n_2pc"] = cn["phases_us"]["total_2pc"]["count"] / cn["latency_us"]["count"]
    r["dtx_1"] = c1["committed_per_s"] if c1 else None
    r["dtx_1_p50"] = c1["latency_us"]["p50"] if c1 else None
    r["dtx_floor"] = c1["floor"]["fsync_p50_us"] if c1 and c1.get("floor") else None
    inv = [x["invariant_ok"] for x in (c1, cn) if x]
    r["invariant"] = "ok" if inv and all(inv) and len(inv) == 2 else "FAIL" if inv else "-"
    rows.append(r)


def vals(key):
    return [r[key] for r in rows if r[key] is not None]


def med(key):
    v = vals(key)
    return statistics.median(v) if v else None


def ratios(num, den):
    return [r[num] / r[den] for r in rows if r[num] is not None and r[den]]


def fmt(x, digits=0):
    return "-" if x is None else f"{x:,.{digits}f}"


def ratio_cell(num, den):
    v = ratios(num, den)
    if not v:
        return "-"
    m = statistics.median(v)
    text = f"**{m:.2f}x**"
    if len(v) > 1:
        text += f" ({min(v):.2f}-{max(v):.2f})"
    return text


def which(key):
    """Which run was best, e.g. "T=16 in 2 of 3"."""
    names = [short(r[key]) for r in rows if r[key]]
    if not names:
        return ""
    if len(rows) == 1:
        return f" ({names[0]})"
    counts = sorted({n: names.count(n) for n in names}.items(), key=lambda kv: -kv[1])
    return " (" + ", ".join(f"{n} in {c} of {len(rows)}" for n, c in counts) + ")"


def verdict(num, den, target):
    v = ratios(num, den)
    if not v:
        return f">= {target}x: no figures"
    m = statistics.median(v)
    if m >= target and min(v) >= target:
        return f">= {target}x: **met**"
    if m >= target:
        return f">= {target}x: met by the median, not by every repetition"
    return f">= {target}x: **not met**"


peak_threads = ", ".join(str(t) for t in local_threads if t > 1) or "none"
o = []
o.append(f"| | PostgreSQL 15 (pg2pc anchor) | dtx bank, 3 participants, TLS | dtx / PostgreSQL | target |")
o.append("| --- | ---: | ---: | ---: | --- |")
o.append(f"| {clients} clients, committed tx/s, against one PostgreSQL node: plain `BEGIN; 2×UPDATE; COMMIT`, "
         f"best of T={peak_threads} | {fmt(med('plain_peak'))}{which('plain_peak_name')} | {fmt(med('dtx_n'))} | "
         f"{ratio_cell('dtx_n', 'plain_peak')} | {verdict('dtx_n', 'plain_peak', 2)} |")
o.append(f"| {clients} clients, committed tx/s, against 2PC by hand: best of 2 and 3 nodes (p2, p3), "
         f"group commit and not, T={clients} | {fmt(med('twopc_n'))}{which('twopc_n_name')} | {fmt(med('dtx_n'))} | "
         f"{ratio_cell('dtx_n', 'twopc_n')} | {verdict('dtx_n', 'twopc_n', 8)} |")
o.append(f"| 1 client, committed tx/s, against one node, plain (T=1) | {fmt(med('plain_1'))} | {fmt(med('dtx_1'))} | "
         f"{ratio_cell('dtx_1', 'plain_1')} | |")
o.append(f"| 1 client, committed tx/s, against 2PC by hand (T=1, best) | {fmt(med('twopc_1'))}{which('twopc_1_name')} | "
         f"{fmt(med('dtx_1'))} | {ratio_cell('dtx_1', 'twopc_1')} | |")
o.append(f"| 1 client, p50 µs, against one node, plain (lower is better) | {fmt(med('plain_1_p50'))} | "
         f"{fmt(med('dtx_1_p50'))} | {ratio_cell('dtx_1_p50', 'plain_1_p50')} | |")
o.append(f"| 1 client, p50 µs, against 2PC by hand (the same run as above) | {fmt(med('twopc_1_p50'))} | "
         f"{fmt(med('dtx_1_p50'))} | {ratio_cell('dtx_1_p50', 'twopc_1_p50')} | |")
o.append(f"| append + `fdatasync` floor, p50 µs (anchor: 512 B x 1000 in its base directory; "
         f"`dtx-bench --floor`: 256 B x 200 in the cluster directory) | {fmt(med('pg_floor'))} | "
         f"{fmt(med('dtx_floor'))} | {ratio_cell('dtx_floor', 'pg_floor')} | |")
o.append("")
o.append("Figures are medians over the repetitions; a ratio is the median of the per-repetition ratios "
         "(range in brackets). PostgreSQL's \"best\" is the best run of the same repetition. "
         "p2/p3: 2PC over 2 or 3 of the 3 servers; gc: group-committed decision log.")
o.append("")
o.append(f"| rep | PostgreSQL plain peak tx/s | 2PC T={clients} tx/s | dtx {clients} clients tx/s | "
         f"dtx CPU µs/tx | dtx tx on >= 2 participants | plain T=1 tx/s, p50 µs | 2PC T=1 tx/s, p50 µs | "
         f"dtx 1 client tx/s, p50 µs | floor p50 µs, PostgreSQL / dtx | anchor verify | dtx invariant |")
o.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
for r in rows:
    share = "-" if r["dtx_n_2pc"] is None else f"{100 * r['dtx_n_2pc']:.0f}%"
    o.append(f"| {r['rep']} | {fmt(r['plain_peak'])} ({short(r['plain_peak_name']) if r['plain_peak_name'] else '-'}) | "
             f"{fmt(r['twopc_n'])} ({short(r['twopc_n_name']) if r['twopc_n_name'] else '-'}) | {fmt(r['dtx_n'])} | "
             f"{fmt(r['dtx_n_cpu'], 1)} | {share} | {fmt(r['plain_1'])}, {fmt(r['plain_1_p50'])} | "
             f"{fmt(r['twopc_1'])}, {fmt(r['twopc_1_p50'])} | {fmt(r['dtx_1'])}, {fmt(r['dtx_1_p50'])} | "
             f"{fmt(r['pg_floor'])} / {fmt(r['dtx_floor'])} | {r['verify']} | {r['invariant']} |")
if failures:
    o.append("")
    o.append("**Not clean:** " + "; ".join(failures) + ".")
print("\n".join(o))
PY

{ cat "$out/header.md"; echo; cat "$out/table.md"; } >"$out/report.md"
{
  echo
  echo "Where this run's names pointed: DIR = $pg2pc, WORK = $work (removed), OUT = $out;"
  echo "wall time $(( $(date +%s) - t_begin )) s."
} >>"$out/report.md"
cat "$out/report.md"
if [[ -n $results ]]; then
  {
    echo
    echo "## dtx against PostgreSQL ($started_utc-$ended_utc UTC): bench/compare.sh, issue 16"
    echo
    cat "$out/header.md"
    echo
    cat "$out/table.md"
  } >>"$results"
  log "appended to $results"
fi
log "report: $out/report.md"
[[ ${#failures[@]} == 0 ]]
