"""The initramfs reader against the distribution's own lister.

probes/initramfs.py reads an initramfs from its bytes (libguestfs's
initrd_list cannot read early-microcode archives nor zstd). Here its
listing is compared with ``lsinitramfs`` (initramfs-tools-core, which
reads every segment as the kernel does) on the archives of the boot test
guests, on every compression and layout the test guests can be built
with, and on this host's own initramfs when it has one: a real archive,
thousands of entries, as Debian's initramfs-tools makes it.
"""

import glob
import os
import subprocess

import pytest

from qimgintrospect.inspectors.guest.probes import initramfs
from testkit import guestimages
from testkit import linuxboot

if subprocess.run(['which', 'lsinitramfs'],
                  capture_output=True).returncode != 0:
    pytest.skip('lsinitramfs (initramfs-tools-core) is not installed',
                allow_module_level=True)


def _lsinitramfs(path):
    # An archive without any compressed segment is listed whole, then
    # lsinitramfs exits 2 looking for the compressed one it expects: the
    # names it printed are still its answer.
    proc = subprocess.run(['lsinitramfs', path], capture_output=True,
                          timeout=300)
    listed = set(proc.stdout.decode('utf-8', 'replace').split('\n'))
    assert proc.returncode in (0, 2), proc.stderr
    return listed - {'', '.'}


def _ours(path):
    with open(path, 'rb') as f:
        data = f.read()
    listing = initramfs.list_names(lambda o, c: data[o:o + c], len(data))
    assert listing.error is None, listing.error
    assert listing.complete
    return listing


def _archives():
    cases = []
    for name, guest in guestimages.BOOT_GUESTS.items():
        for index, kernel in enumerate(guest.boot.kernels):
            cases.append(('%s-%d' % (name, index), guest.boot, kernel))
    for compression in ('none', 'gzip', 'xz', 'zstd'):
        for early in (False, True):
            kernel = linuxboot.Kernel('6.1.0-test', compression=compression,
                                      early_cpio=early)
            cases.append(('%s%s' % (compression, '-early' if early else ''),
                          linuxboot.Boot('debian', (kernel,)), kernel))
    return cases


@pytest.mark.parametrize('name, boot, kernel', _archives(),
                         ids=[c[0] for c in _archives()])
def test_the_test_guests_archives_list_as_lsinitramfs_lists_them(
        name, boot, kernel, tmp_path):
    path = str(tmp_path / 'initrd.img')
    with open(path, 'wb') as f:
        f.write(linuxboot.initramfs_image(boot, kernel))
    listing = _ours(path)
    assert set(listing.names) == _lsinitramfs(path)
    assert len(listing.names) == len(set(listing.names))


@pytest.mark.parametrize('path', sorted(glob.glob('/boot/initrd.img-*'))
                         or [None])
def test_this_hosts_initramfs_lists_as_lsinitramfs_lists_it(path):
    if path is None or not os.access(path, os.R_OK):
        pytest.skip('no readable initramfs in /boot on this host')
    listing = _ours(path)
    assert set(listing.names) == _lsinitramfs(path)
    assert len(listing.names) > 100
