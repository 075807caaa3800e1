#!/bin/bash
# The main job on a sample image this script builds itself, from a fresh
# Debian 12 machine, as root: installs what is needed, makes a
# streamOptimized VMDK with a BusLogic adapter with qemu-img, and runs
# `qimg-introspect inspect` on it (table, then JSON).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
qemu-img create -q -f vmdk -o subformat=streamOptimized,adapter_type=buslogic \
    "$work/sample.vmdk" 1G
cat > "$work/qimgintrospect.conf" <<CONF
[introspection_workspace]
directory = $work/workspace
CONF
echo "== qimg-introspect inspect $work/sample.vmdk --disk-format vmdk"
.venv/bin/qimg-introspect inspect "$work/sample.vmdk" --disk-format vmdk \
    --config-file "$work/qimgintrospect.conf"
echo "== the same, -f json"
.venv/bin/qimg-introspect inspect "$work/sample.vmdk" --disk-format vmdk \
    --config-file "$work/qimgintrospect.conf" -f json
