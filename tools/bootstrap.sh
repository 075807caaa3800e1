#!/bin/bash
# Install everything qimgintrospect needs on a fresh Debian 12 machine, as
# root: the Debian packages listed in bindep.txt (for the given bindep
# profiles) and a virtualenv at .venv made from Debian's python3 (so the
# python3-guestfs binding imports), with qimgintrospect and tox in it.
#
#   tools/bootstrap.sh [PROFILE...]     e.g. tools/bootstrap.sh test guestfs
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

apt_updated=
apt_install() {
    [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! dpkg -s python3-venv >/dev/null 2>&1; then
    apt_install python3 python3-venv
fi
if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
.venv/bin/pip install -q bindep
# bindep -b prints the missing packages and exits 1 when there are some.
missing=$(.venv/bin/bindep -b "$@" || true)
if [ -n "$missing" ]; then
    echo "bootstrap: installing Debian packages: $(echo $missing)"
    # shellcheck disable=SC2086
    apt_install $missing
fi
.venv/bin/pip install -q -e . 'tox>=4'
