#!/usr/bin/env bash
# Backs the same folder up with `strew bench pipeline` and with restic (local
# repository, format v2 with compression), in the same run, and restores both;
# prints wall times, throughput and peak memory side by side.
#   usage: scripts/bench-pipeline-vs-restic.sh [FOLDER] [ROUNDS]
# Needs: a release build of strew (cargo build --release -p strew-node), restic
# (Debian: apt-get install restic), GNU time (/usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."
folder=${1:-$(rustc --print sysroot)}
rounds=${2:-1}
strew=target/release/strew
[ -x "$strew" ] || { echo "build first: cargo build --release -p strew-node" >&2; exit 1; }
command -v restic >/dev/null || { echo "restic is not installed (apt-get install restic)" >&2; exit 1; }
work=$(mktemp -d /var/tmp/strew-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$work/restic-repo"
bytes=$(du -sb --apparent-size "$folder" | cut -f1)
files=$(find "$folder" -type f | wc -l)
echo "folder: $folder ($files files, $bytes bytes); machine: $(nproc) cores, $(uname -r)"
echo "strew $($strew --version | cut -d' ' -f2), $(restic version | cut -d' ' -f1-2)"
# Warm the page cache so both read from memory, not from a cold disk.
tar -cf - "$folder" 2>/dev/null >/dev/null
peak() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$1"; }
wall() { python3 -c "import sys; t=sys.argv[1].split(':'); print(sum(float(x)*60**i for i,x in enumerate(reversed(t))))" "$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$1")"; }
for round in $(seq 1 "$rounds"); do
  /usr/bin/time -v "$strew" bench pipeline "$folder" --json --work-dir "$work" \
    > "$work/strew.json" 2> "$work/strew.time"
  rm -rf "$RESTIC_REPOSITORY" "$work/restic-restore"
  restic init --repository-version 2 -q >/dev/null
  /usr/bin/time -v restic backup -q "$folder" > /dev/null 2> "$work/restic-backup.time"
  /usr/bin/time -v restic restore -q latest --target "$work/restic-restore" > /dev/null 2> "$work/restic-restore.time"
  rb=$(wall "$work/restic-backup.time"); rr=$(wall "$work/restic-restore.time")
  python3 - "$work/strew.json" "$bytes" "$rb" "$rr" "$(peak "$work/strew.time")" \
      "$(peak "$work/restic-backup.time")" "$(peak "$work/restic-restore.time")" "$round" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); n = int(sys.argv[2]); rb, rr = float(sys.argv[3]), float(sys.argv[4])
sp, rbp, rrp, rnd = sys.argv[5], sys.argv[6], sys.argv[7], sys.argv[8]
mb = n / 1e6
print(f"round {rnd}")
print(f"  strew  backup  {s['backup_seconds']:7.2f} s {mb/s['backup_seconds']:8.1f} MB/s   restore {s['restore_seconds']:7.2f} s {mb/s['restore_seconds']:8.1f} MB/s   peak {int(sp)//1024} MiB   verified={s['verified']}  ({s['packets_deleted']} packets deleted first, {s['redundancy']})")
print(f"  restic backup  {rb:7.2f} s {mb/rb:8.1f} MB/s   restore {rr:7.2f} s {mb/rr:8.1f} MB/s   peak {int(rbp)//1024}/{int(rrp)//1024} MiB")
print(f"  ratio  backup  {rb/s['backup_seconds']:.2f}x   restore {rr/s['restore_seconds']:.2f}x  (restic time / strew time)")
PY
done
