#!/bin/bash
# The main job on a sample image this script builds itself, from a fresh
# Debian 12 machine, as root: installs what is needed (qemu-img, libguestfs),
# builds a tiny Ubuntu-like guest with guestfish (no download), turns it into
# a streamOptimized VMDK with a BusLogic adapter, and runs
# `qimg-introspect inspect` on it: format properties from the VMDK header
# and qemu-img, OS properties from a libguestfs appliance.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh guestfs
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# guestfish, which builds the sample, has no fallback of its own where KVM
# is broken (these machines: its launch aborts or hangs): it gets the
# accelerator qimgintrospect's probe finds. qimg-introspect itself needs
# nothing: it probes and falls back by itself.
export LIBGUESTFS_BACKEND=direct
if [ "$(.venv/bin/python tools/check-appliance --probe)" = tcg ]; then
    export LIBGUESTFS_BACKEND_SETTINGS=force_tcg
fi

cat > "$work/os-release" <<'OS'
NAME="Ubuntu"
VERSION="22.04.4 LTS (Jammy Jellyfish)"
ID=ubuntu
ID_LIKE=debian
VERSION_ID="22.04"
PRETTY_NAME="Ubuntu 22.04.4 LTS"
OS
printf '/dev/sda1 / ext4 defaults 0 1\n' > "$work/fstab"
printf 'sample\n' > "$work/hostname"
echo "== building a sample guest with guestfish"
guestfish -N "$work/guest.raw=disk:256M" -- \
    part-disk /dev/sda mbr : mkfs ext4 /dev/sda1 : mount /dev/sda1 / : \
    mkdir-p /etc : mkdir-p /bin : mkdir-p /var/lib/dpkg : \
    touch /var/lib/dpkg/status : upload "$work/os-release" /etc/os-release : \
    upload "$work/fstab" /etc/fstab : upload "$work/hostname" /etc/hostname : \
    upload /bin/ls /bin/ls
qemu-img convert -q -f raw -O vmdk \
    -o subformat=streamOptimized,adapter_type=buslogic \
    "$work/guest.raw" "$work/sample.vmdk"

cat > "$work/qimgintrospect.conf" <<CONF
[introspection_workspace]
directory = $work/workspace
CONF
echo "== qimg-introspect inspect sample.vmdk --disk-format vmdk"
echo "   (the guest appliance takes seconds with KVM, 20-30 s under software"
echo "   emulation; where KVM is broken, a probe of up to 10 s finds out)"
env -u LIBGUESTFS_BACKEND_SETTINGS \
    .venv/bin/qimg-introspect inspect "$work/sample.vmdk" --disk-format vmdk \
    --config-file "$work/qimgintrospect.conf" -f json
