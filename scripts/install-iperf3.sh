#!/usr/bin/env bash
# Installs iperf3 without root into a local directory (default: .tools/iperf3
# under the repository) from the distribution's packages: `apt-get download`
# fetches iperf3, libiperf0 and libsctp1, `dpkg -x` unpacks them, and a wrapper script
# sets LD_LIBRARY_PATH. Used by `cargo bench -p strew-overlay --bench transfer`,
# which looks for `.tools/iperf3/bin/iperf3` (or $STREW_IPERF3, or iperf3 on PATH).
#
# Usage: scripts/install-iperf3.sh [DIR]
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$repo/.tools/iperf3}"
if [ -x "$dir/bin/iperf3" ] && "$dir/bin/iperf3" --version >/dev/null 2>&1; then
    echo "iperf3 already installed: $dir/bin/iperf3"
    exit 0
fi
command -v apt-get >/dev/null || { echo "apt-get not found: install iperf3 with your package manager" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download iperf3 libiperf0 libsctp1 >/dev/null)
mkdir -p "$dir/root" "$dir/bin"
for deb in "$work"/*.deb; do dpkg -x "$deb" "$dir/root"; done
lib="$(find "$dir/root" -name "*.so*" -printf "%h\n" | sort -u | paste -sd:)"
cat >"$dir/bin/iperf3" <<WRAP
#!/bin/sh
LD_LIBRARY_PATH="$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$dir/root/usr/bin/iperf3" "\$@"
WRAP
chmod +x "$dir/bin/iperf3"
"$dir/bin/iperf3" --version | head -n1
echo "installed: $dir/bin/iperf3"
