#!/usr/bin/env bash
# The loader measurements for a machine with cores to spare, sized for the device's
# limits (one command of at most 10 minutes): 64-byte and 1 KiB rows, the default decode
# threads (cores - 1) and one, no RSS section. Writes each log under $OUT (or /tmp/out).
# From the repo root, after bench/device/build.sh here and with its two files carried:
#   bash bench/device/loader.sh
set -uo pipefail
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
one() { # one <name> <bench/loader.ts options>
  local name=$1; shift
  echo "=== $name: $*"
  timeout 140 bash bench/device/run.sh bench/loader.ts --skip-rss --runs 3 --stall-runs 2 "$@" > "$OUT/$name.log" 2>&1
  echo "rc=$?"
  grep -E "^\| (granary|warm|pure decode: bytes in memory \(local)|= \*\*|decode per batch" "$OUT/$name.log" | cut -c1-220
}
one rows64 
one rows1k --embedding-bytes 1024 --rows 300000
one rows64-1thread --threads 1
one rows1k-1thread --embedding-bytes 1024 --rows 300000 --threads 1
