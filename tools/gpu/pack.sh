#!/usr/bin/env bash
# Packs what the GPU machine needs to run Phalanx's WebGPU code into .gpu/ (git-ignored; carry it with the
# device tool): the repo's Node 24 and dawn.node (xz), the `webgpu` package's loader, the Vulkan loader and glvnd .debs,
# bundles of the given entry points (esbuild, one .mjs each), remote.sh and the PyTorch scripts.
# With no entry point it bundles the benchmark runner, tools/bench/run.ts -> .gpu/run.mjs (every registered case).
# usage: tools/gpu/pack.sh [ENTRY.ts...]
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.gpu
mkdir -p "$out/webgpu"
[ -f "$out/node.xz" ] || xz -T2 -6 -c node_modules/node/bin/node > "$out/node.xz"
[ -f "$out/dawn.node.xz" ] || xz -T2 -6 -c node_modules/webgpu/dist/linux-x64/dawn.node > "$out/dawn.node.xz"
cp node_modules/webgpu/index.js node_modules/webgpu/package.json "$out/webgpu/"
# The Vulkan loader, and glvnd, which the NVIDIA ICD's libGLX_nvidia needs.
if ! ls "$out"/debs/libvulkan1_*.deb >/dev/null 2>&1; then
  mkdir -p "$out/debs" && (cd "$out/debs" && apt-get download libvulkan1 libglvnd0 libglx0 libegl1 libgl1 libopengl0 libgles2 2>/dev/null)
fi
[ $# -gt 0 ] || set -- tools/bench/run.ts
for entry in "$@"; do
  name=$(basename "${entry%.ts}")
  node_modules/.bin/esbuild "$entry" --bundle --platform=node --format=esm --external:webgpu \
    --conditions=@phalanx/source --outfile="$out/$name.mjs" --log-level=warning
done
cp tools/gpu/remote.sh tools/reference/*.py "$out/"
# what was packed: the branch and commit (plus '+dirty' for uncommitted changes), for the results' header
dirty=$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo +dirty || true)
printf 'BENCH_BRANCH=%s\nBENCH_COMMIT=%s%s\n' "$(git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$dirty" > "$out/packed.env"
du -sh "$out"
