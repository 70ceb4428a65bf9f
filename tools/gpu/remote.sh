#!/usr/bin/env bash
# Runs on the GPU machine from the carried .gpu/: installs the Vulkan loader, unpacks Node and dawn.node into
# /tmp/phx (a node_modules/webgpu beside the bundles), then runs each CASE of BUNDLE in its own process with
# up to 3 tries, since dawn.node crashes intermittently there. Results: JSON lines on stdout; tries on stderr.
# usage: bash .gpu/remote.sh BUNDLE.mjs [ARGS...] -- CASE...
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for f in "$here"/debs/*.deb; do dpkg -x "$f" /; done; ldconfig
run=/tmp/phx; mkdir -p $run/node_modules/webgpu/dist/linux-x64
[ -x $run/node ] || { python3 -c "import lzma,sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())" "$here/node.xz" > $run/node; chmod +x $run/node; }
[ -f $run/node_modules/webgpu/dist/linux-x64/dawn.node ] || python3 -c "import lzma,sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())" "$here/dawn.node.xz" > $run/node_modules/webgpu/dist/linux-x64/dawn.node
cp "$here"/webgpu/* $run/node_modules/webgpu/; cp "$here"/*.mjs $run/
[ -n "${VK_DRIVER_FILES:-}" ] || export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
bundle=$1; shift; args=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do args+=("$1"); shift; done; shift || true
for c in "$@"; do
  for try in 1 2 3; do
    (cd $run && ./node "$bundle" "${args[@]}" --case "$c"); rc=$?
    [ $rc -eq 0 ] && break
    echo "case $c: try $try failed (exit $rc)" >&2
  done
done
