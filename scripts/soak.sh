#!/usr/bin/env bash
# Soak (issue 14, not part of CI): ten minutes of a paced sender through promlink (disk queue,
# fsync always) while the DCE emulator answers with random faults and promlink is killed with
# kill -9 and restarted every two minutes; checks that every acknowledged sample arrived, in
# order, and plots RSS, queue bytes and delivered samples per second (benches/soak.rs).
#
#   bash scripts/soak.sh                       # 600 s, a kill every 120 s
#   SOAK_SECONDS=120 SOAK_KILL_EVERY=30 bash scripts/soak.sh
#
# Writes target/soak/soak.csv, target/soak/soak.png and target/soak/promlink.log (SOAK_OUT
# changes the directory). The plot's text needs a TTF font: Debian's fonts-dejavu-core is
# installed when missing (as root or through sudo), or set SOAK_FONT to another TTF file.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

font=${SOAK_FONT:-/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf}
if [[ ! -f $font ]] && command -v apt-get >/dev/null; then
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends fonts-dejavu-core
fi
exec cargo bench --bench soak -- --bench
