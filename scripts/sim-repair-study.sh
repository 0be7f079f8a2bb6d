#!/usr/bin/env bash
# Repair thresholds and grace periods for erasure 4+2 and 10+4 under Weibull
# churn (simulator/scenarios/repair-study.toml): runs strew-sim on every
# variant and prints one Markdown table row per run with the simulated loss
# beside the closed-form window model, and the repair traffic beside
# Reed–Solomon's lower bound (bytes destroyed × K).
#   usage: scripts/sim-repair-study.sh [SEED]   (default: the scenario's seed, 1)
# Needs: a release build of the simulator (cargo build --release -p strew-simulator), jq.
set -euo pipefail
cd "$(dirname "$0")/.."
sim=${STREW_SIM:-${CARGO_TARGET_DIR:-$PWD/target}/release/strew-sim}
[ -x "$sim" ] || { echo "build first: cargo build --release -p strew-simulator" >&2; exit 1; }
seed=${1:-1}
work=$(mktemp -d /tmp/strew-repair-study.XXXXXX)
trap 'rm -rf "$work"' EXIT
base=simulator/scenarios/repair-study.toml
echo "| code | threshold | grace | objects lost | closed form, with repair | closed form, no repair | stripes repaired | repair read GiB | × RS bound | availability |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for code in 4+2 10+4; do
  k=${code%+*}; m=${code#*+}
  case $code in 4+2) thresholds="1 2" ;; 10+4) thresholds="1 2 4" ;; esac
  for threshold in $thresholds; do
    for grace in 1h 4h 24h 7d; do
      name="$code-t$threshold-$grace"
      sed -e "s/^redundancy = .*/redundancy = \"erasure:$code\"/" \
          -e "s/^object_size = .*/object_size = \"${k}MiB\"/" \
          -e "s/^threshold = .*/threshold = $threshold/" \
          -e "s/^grace = .*/grace = \"$grace\"/" \
          -e "s/^name = .*/name = \"$name\"/" "$base" > "$work/$name.toml"
      "$sim" run "$work/$name.toml" --seed "$seed" --out "$work/$name" > /dev/null
      jq -r --arg code "$code" --arg t "$threshold" --arg g "$grace" '
        "| \($code) | \($t) | \($g) | \(.objects_lost) of \(.objects_stored) | "
        + "\(.closed_form.expected_objects_lost_with_repair * 1000 | round / 1000) | "
        + "\(.closed_form.expected_objects_lost_without_repair | round) | \(.stripes_repaired) | "
        + "\(.repair_bytes_read / 1073741824 * 10 | round / 10) | "
        + "\(.repair_read_over_lower_bound * 100 | round / 100) | \(.availability * 1000000 | round / 1000000) |"' \
        "$work/$name/report.json"
    done
  done
done
