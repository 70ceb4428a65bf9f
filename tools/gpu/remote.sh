#!/usr/bin/env bash
# Runs on the GPU machine from the carried .gpu/: installs the Vulkan loader, unpacks Node and dawn.node into
# /tmp/phx (a node_modules/webgpu beside the bundles), then either
#   bash .gpu/remote.sh bench [RUNNER ARGS...]
#     runs the benchmark runner (.gpu/run.mjs, from tools/bench/run.ts) with every case in its own process and
#     up to 3 tries (dawn.node crashes intermittently there), the PyTorch counterparts (python3, same GPU) in the
#     same call, and writes results.json / results.md (side-by-side ratio table) / rows.jsonl / SVG plots to
#     $OUT (the device tool's output folder; .gpu/out without it). E.g. `bash .gpu/remote.sh bench decode`.
#   bash .gpu/remote.sh BUNDLE.mjs [ARGS...] -- CASE...
#     the older form: runs each CASE of BUNDLE in its own process with up to 3 tries; JSON lines on stdout.
# PHX_LOCAL=1 skips the system setup (the .debs, NVIDIA's ICD) to try the same steps on a development machine.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${PHX_LOCAL:-}" ]; then for f in "$here"/debs/*.deb; do dpkg -x "$f" /; done; ldconfig; fi
run=${PHX_RUN:-/tmp/phx}; mkdir -p $run/node_modules/webgpu/dist/linux-x64
[ -x $run/node ] || { python3 -c "import lzma,sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())" "$here/node.xz" > $run/node; chmod +x $run/node; }
[ -f $run/node_modules/webgpu/dist/linux-x64/dawn.node ] || python3 -c "import lzma,sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())" "$here/dawn.node.xz" > $run/node_modules/webgpu/dist/linux-x64/dawn.node
cp "$here"/webgpu/* $run/node_modules/webgpu/; cp "$here"/*.mjs $run/
[ -n "${VK_DRIVER_FILES:-}" ] || [ -n "${PHX_LOCAL:-}" ] || export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
if [ "${1:-}" = bench ]; then
  shift
  [ -f "$here/packed.env" ] && { set -a; . "$here/packed.env"; set +a; }
  out=${OUT:-$here/out}; mkdir -p "$out"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$out/gpu.txt" 2>/dev/null || true
  (cd $run && ./node run.mjs --isolate --retries 3 --timeout 300 --pytorch --python "${PYTHON:-python3}" --pytorch-dir "$here" --no-cache --out "$out" "$@")
  exit $?
fi
bundle=$1; shift; args=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do args+=("$1"); shift; done; shift || true
for c in "$@"; do
  for try in 1 2 3; do
    (cd $run && ./node "$bundle" "${args[@]}" --case "$c"); rc=$?
    [ $rc -eq 0 ] && break
    echo "case $c: try $try failed (exit $rc)" >&2
  done
done
