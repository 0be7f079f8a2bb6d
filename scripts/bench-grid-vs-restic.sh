#!/usr/bin/env bash
# Backs a folder up onto a local strew grid (six storage nodes plus the source
# node, all real `strew run` processes on 127.0.0.1 at European city
# locations, erasure 4+2, backup distance 300 km..) and restores it, then does
# the same with restic (local repository, format v2), in the same run; prints
# wall times, throughput and peak memory side by side and checks both restores.
#   usage: scripts/bench-grid-vs-restic.sh [FOLDER]   (default: the Rust toolchain)
# Needs: a release build of strew (cargo build --release -p strew-node),
# restic (installed with apt-get if missing and root), GNU time (/usr/bin/time).
# STREW names another strew binary (default: target/release/strew).
# BACKUP_FLAGS adds flags to `strew backup` (e.g. "--zstd-level 1").
# PERF=FILE records the strew backup system-wide with perf (call graphs) into FILE,
# and the strew restore into FILE.restore.
set -euo pipefail
cd "$(dirname "$0")/.."
folder=$(realpath "${1:-$(rustc --print sysroot)}")
strew=${STREW:-$PWD/target/release/strew}
[ -x "$strew" ] || { echo "build first: cargo build --release -p strew-node" >&2; exit 1; }
if [ -n "${PERF:-}" ] && ! command -v perf >/dev/null; then
  echo "PERF is set but perf is not installed (apt-get install linux-perf)" >&2; exit 1; fi
if ! command -v restic >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q restic >/dev/null; else
    echo "restic is not installed (apt-get install restic)" >&2; exit 1; fi
fi
# A local bench grid takes its nodes in at once (an open grid waits 10 minutes).
export STREW_JOIN_SEEN_SECS=${STREW_JOIN_SEEN_SECS:-0}
work=$(mktemp -d /var/tmp/strew-grid-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] && echo "kept $work" || rm -rf "$work"; }
trap cleanup EXIT
# name lat lon: the source first, then six targets 300..2000 km away and >= 300 km apart.
cities=("Paris 48.8566 2.3522" "Berlin 52.5244 13.4105" "Madrid 40.4165 -3.7026" "Rome 41.8919 12.5113"
        "Warsaw 52.2298 21.0118" "Stockholm 59.3293 18.0686" "Lisbon 38.7223 -9.1393")
start() { # index coordinator-flag bootstrap
  read -r name lat lon <<<"${cities[$1]}"
  local dir="$work/node-$1"; mkdir -p "$dir"
  "$strew" --data-dir "$dir" --log warn run --listen /ip4/127.0.0.1/tcp/0 \
      --location "$lat,$lon" --storage 20GiB $2 ${3:+--bootstrap "$3"} 2> "$dir/node.log" &
  pids+=($!)
}
status() { "$strew" --data-dir "$work/node-$1" status --json 2>/dev/null; }
# The source founds an open grid: it holds the grid key, certifies itself and forms the group.
mkdir -p "$work/node-0" && "$strew" --data-dir "$work/node-0" grid create --open --json > /dev/null
start 0 --coordinator ""
for _ in $(seq 100); do boot=$(status 0 | python3 -c 'import json,sys; print(json.load(sys.stdin)["listen_addrs"][0])' 2>/dev/null) && break; sleep 0.2; done
for i in 1 2 3 4 5 6; do start "$i" "" "$boot"; done
for i in 0 1 2 3 4 5 6; do
  for _ in $(seq 300); do
    status "$i" | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["manager"] and s["peers"]>=6 else 1)' 2>/dev/null && break
    sleep 0.2
  done
done
sleep 3 # the manager takes every node into its placement view (1 s polls)
bytes=$(du -sb --apparent-size "$folder" | cut -f1)
files=$(find "$folder" -type f | wc -l)
echo "folder: $folder ($files files, $bytes bytes); machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "strew $($strew --version | cut -d' ' -f2) on 7 local processes (erasure 4+2), $(restic version | cut -d' ' -f1-2)"
tar -cf - "$folder" 2>/dev/null >/dev/null # warm the page cache for both
peak() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$1"; }
wall() { python3 -c "import sys; t=sys.argv[1].split(':'); print(sum(float(x)*60**i for i,x in enumerate(reversed(t))))" "$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$1")"; }
src="$work/node-0"
# Each timed phase starts with nothing left to write back from the one before
# (a restore writes 1.3 GB: its writeback would otherwise slow the next phase).
settle() { sync; sleep 1; }
settle
[ -n "${PERF:-}" ] && { perf record -a -g -F 499 -o "$PERF" 2>/dev/null & perf_pid=$!; sleep 1; }
t0=$(date +%s.%N)
"$strew" --data-dir "$src" backup "$folder" --backup-distance 300km.. --spread 300km.. ${BACKUP_FLAGS:-} --json > "$work/backup.json"
t1=$(date +%s.%N)
[ -n "${PERF:-}" ] && { kill -INT "$perf_pid"; wait "$perf_pid" || true; }
snap=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["snapshot"])' "$work/backup.json")
settle
[ -n "${PERF:-}" ] && { perf record -a -g -F 499 -o "$PERF.restore" 2>/dev/null & perf_pid=$!; sleep 1; }
tr=$(date +%s.%N)
"$strew" --data-dir "$src" restore "$snap" "$work/strew-restore" --json > "$work/restore.json"
t2=$(date +%s.%N)
[ -n "${PERF:-}" ] && { kill -INT "$perf_pid"; wait "$perf_pid" || true; }
diff -r --no-dereference "$folder" "$work/strew-restore/$(basename "$folder")" > /dev/null && sv=yes || sv=NO
node_peak=$(for p in "${pids[@]}"; do grep VmHWM "/proc/$p/status" 2>/dev/null | awk '{print $2}'; done | sort -n | tail -1)
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$work/restic-repo"
restic init --repository-version 2 -q >/dev/null
settle
/usr/bin/time -v restic backup -q "$folder" > /dev/null 2> "$work/restic-backup.time"
settle
/usr/bin/time -v restic restore -q latest --target "$work/restic-restore" > /dev/null 2> "$work/restic-restore.time"
diff -r --no-dereference "$folder" "$work/restic-restore$folder" > /dev/null && rv=yes || rv=NO
python3 - "$bytes" "$t0" "$t1" "$tr" "$t2" "$(wall "$work/restic-backup.time")" "$(wall "$work/restic-restore.time")" \
    "$node_peak" "$(peak "$work/restic-backup.time")" "$(peak "$work/restic-restore.time")" "$sv" "$rv" "$work/backup.json" <<'PY'
import json, sys
n = int(sys.argv[1]); t0, t1, tr, t2 = map(float, sys.argv[2:6]); rb, rr = float(sys.argv[6]), float(sys.argv[7])
sb, sr = t1 - t0, t2 - tr
np_, rbp, rrp, sv, rv = sys.argv[8:13]
b = json.load(open(sys.argv[13])); mb = n / 1e6
print(f"  strew  backup {sb:7.2f} s {mb/sb:7.1f} MB/s   restore {sr:7.2f} s {mb/sr:7.1f} MB/s   largest node peak {int(np_)//1024} MiB   identical={sv}   ({b['uploaded_packets']} packets, {b['uploaded_bytes']/1e6:.0f} MB sent to {len(b['targets'])} targets)")
print(f"  restic backup {rb:7.2f} s {mb/rb:7.1f} MB/s   restore {rr:7.2f} s {mb/rr:7.1f} MB/s   peak {int(rbp)//1024}/{int(rrp)//1024} MiB   identical={rv}")
print(f"  ratio  backup {rb/sb:.2f}x   restore {rr/sr:.2f}x   (restic time / strew time; >1 means strew is faster)")
PY
