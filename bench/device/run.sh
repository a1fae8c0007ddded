#!/usr/bin/env bash
# On the device, from the repo root:  bash bench/device/run.sh <bench file> <its options>
# e.g.  bash bench/device/run.sh bench/loader.ts --skip-rss --runs 3 --stall-runs 2
# Unpacks the Node binary and node_modules that bench/device/build.sh made (into /tmp and
# ./node_modules) and runs the bench with them.
set -euo pipefail
PKG="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$PKG/../.."
[ -s "$PKG/node.xz" ] && [ -s "$PKG/mods.tar.xz" ] || { echo "run.sh: no $PKG/node.xz or mods.tar.xz: run bench/device/build.sh first and carry both" >&2; exit 1; }

unxz_to() { # unxz_to <src.xz> <dest>   (xz if present, else python3's lzma)
  if command -v xz >/dev/null 2>&1; then xz -dc "$1" > "$2"
  else python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' "$1" "$2"; fi
}

if ! [ -x /tmp/nodebin/node ]; then
  mkdir -p /tmp/nodebin
  unxz_to "$PKG/node.xz" /tmp/nodebin/node.tmp
  chmod +x /tmp/nodebin/node.tmp
  mv -f /tmp/nodebin/node.tmp /tmp/nodebin/node
fi
if ! [ -d node_modules/apache-arrow ]; then
  rm -rf node_modules
  if command -v xz >/dev/null 2>&1; then tar -xJf "$PKG/mods.tar.xz"
  else python3 -c 'import tarfile,sys; tarfile.open(sys.argv[1],"r:xz").extractall(".")' "$PKG/mods.tar.xz"; fi
fi

export PATH="/tmp/nodebin:$PATH"
echo "node $(node -v), $(nproc) cores"
bench="$1"; shift
exec node --import tsx "$bench" "$@"
