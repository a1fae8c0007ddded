#!/usr/bin/env bash
# Builds what a benchmark needs on a machine that has no network and no Node (the lent
# accelerator machine: see bench/NOTES.md, "On a 16-core machine"), into bench/device/
# (git-ignored):
#   node.xz      - this machine's node v20 binary, xz -9e (~24 MB)
#   mods.tar.xz  - the runtime node_modules closure: the package's dependencies but s3rver,
#                  plus tsx (~10 MB)
# bench/device/run.sh unpacks both there and runs a bench. Carry both files along (the
# device tool's `carry`: bench/device/node.xz and bench/device/mods.tar.xz).
# Run from anywhere: bash bench/device/build.sh   (needs node, xz, tar; reads node_modules, changes nothing there)
set -euo pipefail

PKG="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$PKG/../.." && pwd)"
cd "$ROOT"

[ "$(uname -m)" = x86_64 ] || { echo "build.sh: expected x86_64, got $(uname -m)" >&2; exit 1; }
NODE_BIN="$(readlink -f "$(command -v node)")"
NODE_VER="$("$NODE_BIN" -v)"
case "$NODE_VER" in v20.*) ;; *) echo "build.sh: expected node v20, got $NODE_VER" >&2; exit 1 ;; esac
[ -d node_modules ] || { echo "build.sh: no node_modules in $ROOT" >&2; exit 1; }

# --- 1. node.xz -------------------------------------------------------------------------
echo "node: $NODE_BIN ($NODE_VER)"
if [ "${DEVPKG_KEEP_NODE:-0}" = 1 ] && [ -s "$PKG/node.xz" ]; then
  echo "node.xz kept (DEVPKG_KEEP_NODE=1)"
else
  xz -9e -T2 -c "$NODE_BIN" > "$PKG/node.xz.tmp"
  mv "$PKG/node.xz.tmp" "$PKG/node.xz"
fi

# --- 2. mods.tar.xz ---------------------------------------------------------------------
# Seeds: every "dependencies" entry of package.json except s3rver (used only by src/demo and
# test/support/s3rver.ts, neither reached from bench/loader.ts, the cache-worker child or the
# piscina workers), plus tsx (loader for `node --import tsx`, also for the spawned children).
# Closure follows dependencies + optionalDependencies + peerDependencies with node's
# nested node_modules lookup, i.e. what `npm ls --omit=dev --all --parseable` lists.
LIST="$(mktemp)"
trap 'rm -f "$LIST"' EXIT
"$NODE_BIN" - "$ROOT" > "$LIST" <<'EOF'
const fs = require('fs'), path = require('path');
const root = process.argv[2];
const pj = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const seeds = [...Object.keys(pj.dependencies || {}).filter((n) => n !== 's3rver'), 'tsx'];
const seen = new Set();
function resolveFrom(dir, name) {
  for (let d = dir; ; ) {
    const p = path.join(d, 'node_modules', name);
    if (fs.existsSync(path.join(p, 'package.json'))) return p;
    if (d === root) return null;
    // step out of .../node_modules/(@scope/)?pkg to the directory holding that node_modules
    const parts = path.relative(root, d).split(path.sep);
    const i = parts.lastIndexOf('node_modules');
    d = i <= 0 ? root : path.join(root, ...parts.slice(0, i));
  }
}
function visit(p) {
  if (seen.has(p)) return;
  seen.add(p);
  const m = JSON.parse(fs.readFileSync(path.join(p, 'package.json'), 'utf8'));
  const deps = [
    ...Object.keys(m.dependencies || {}).map((k) => [k, true]),
    ...Object.keys(m.optionalDependencies || {}).map((k) => [k, false]),
    ...Object.keys(m.peerDependencies || {}).map((k) => [k, false]),
  ];
  for (const [k, required] of deps) {
    const r = resolveFrom(p, k);
    if (r) visit(r);
    else if (required) { console.error(`missing ${k} (needed by ${path.relative(root, p)})`); process.exitCode = 1; }
  }
}
for (const s of seeds) {
  const r = resolveFrom(root, s);
  if (!r) { console.error(`missing seed ${s}`); process.exit(1); }
  visit(r);
}
for (const p of [...seen].sort()) console.log(path.relative(root, p));
EOF
echo "packages: $(wc -l < "$LIST")"
# Safety: every package nested inside a listed package must itself be in the closure
# (otherwise tar would carry something unlisted).
while read -r d; do
  [ -d "$d/node_modules" ] || continue
  for p in "$d"/node_modules/* "$d"/node_modules/@*/*; do
    if [ -f "$p/package.json" ] && ! grep -qxF "$p" "$LIST"; then
      echo "build.sh: unlisted nested package $p (would be carried inside its parent)" >&2; exit 1
    fi
  done
done < "$LIST"

# tar recurses, so list only top-level dirs: a nested package (pkg/node_modules/x) is already
# inside its listed parent, and listing it twice would store it as a hard link to itself.
TOP="$(mktemp)"
trap 'rm -f "$LIST" "$TOP"' EXIT
grep -v '^node_modules/.*/node_modules/' "$LIST" > "$TOP" || true
while read -r p; do  # every nested package's parent must be listed (so it is carried)
  parent="${p%%/node_modules/*}"
  grep -qxF "$parent" "$TOP" || { echo "build.sh: nested $p but parent $parent not listed" >&2; exit 1; }
done < <(grep '^node_modules/.*/node_modules/' "$LIST" || true)

# Trims (verified): parquet-wasm resolves "." under the "node" condition to
# node/parquet_wasm.js, which readFileSync()s node/parquet_wasm_bg.wasm; src/ only imports the
# bare "parquet-wasm" specifier, so the esm/ and bundler/ targets are never loaded.
tar -C "$ROOT" --sort=name --owner=0 --group=0 --numeric-owner \
    --exclude='node_modules/parquet-wasm/esm' --exclude='node_modules/parquet-wasm/bundler' \
    --exclude='node_modules/.bin' \
    -cf - -T "$TOP" | xz -9e -T2 > "$PKG/mods.tar.xz.tmp"
mv "$PKG/mods.tar.xz.tmp" "$PKG/mods.tar.xz"

ls -l "$PKG"
du -cb "$PKG"/node.xz "$PKG"/mods.tar.xz | tail -1
