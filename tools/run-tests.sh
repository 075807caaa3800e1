#!/bin/bash
# The whole test suite, from a fresh Debian 12 machine, as root:
# installs what it needs (tools/bootstrap.sh), checks that a libguestfs
# appliance starts on this host (tools/check-appliance: the reason, in one
# line, instead of every guest test failing with supermin's words), then
# runs tox's pep8, docs and py3 environments (unit and functional tests:
# real qemu-img, a real libguestfs appliance, a real glance-api on
# 127.0.0.1).
#
#   tools/run-tests.sh [TOX ENVS]      default: pep8,py3,docs
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh test guestfs remote
# Where KVM is broken (these machines: it aborts or hangs), it probes KVM
# and falls back to software emulation by itself, as inspections do.
.venv/bin/python tools/check-appliance
exec .venv/bin/tox -e "${1:-pep8,py3,docs}"
