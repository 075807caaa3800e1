#!/usr/bin/env python3
"""Ranged reads of remote images against whole downloads (issue 12).

The images are served by a real nginx on loopback (``--limit-rate
125m`` caps each connection near 1 Gbit/s, to stand for a network);
benchmarks/remote_audit.py measures the audit on the test glance-api.

For each image, the median of ``--runs`` runs of:

* **whole**: stream the image into a sparse file (zero chunks become
  holes, as ``Slot.receive`` does), then ``qemu-img info -f FMT`` on it;
* **ranged**: ``remote.image.open_remote`` (its first request), the
  core's header checks (``inspectors/header.inspect`` reading the remote
  image), then ``qemu-img info -f FMT`` through the nbdkit export (its
  start included).

Then bytes and requests of the ranged path per block size
(``--block-sizes``), and with ``--guest`` a libguestfs inspection of a
guest image through the export, per block size (one appliance launch
each, software emulation).

Images (built once in ``--keep DIR`` and reused): a 4 GiB sparse raw
with a GPT, a qcow2 holding 2 GiB of data (4 GiB virtual), a
streamOptimized VMDK of the same data, and with ``--guest`` an ext4
guest holding 100 MiB besides its system files.

    python benchmarks/remote_ranges.py [--runs N] [--keep DIR]
        [--limit-rate 125m] [--block-sizes 16,64,256,1024] [--guest]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from qimgintrospect.inspectors import header  # noqa: E402
from qimgintrospect.remote import image as remote_image  # noqa: E402
from qimgintrospect import workspace  # noqa: E402
from testkit import config  # noqa: E402
from testkit import imagebuilder  # noqa: E402
from testkit import scratch  # noqa: E402
from testkit import webserver  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
CHUNK = 8 * MiB


def build_images(directory, guest):
    """{name: format} of the images in *directory*, built if missing."""
    images = {'sparse.raw': 'raw', 'data.qcow2': 'qcow2',
              'stream.vmdk': 'vmdk'}
    path = os.path.join(directory, '%s')
    if not os.path.exists(path % 'sparse.raw'):
        imagebuilder.partitioned_raw(directory, 'sparse.raw', 4 * GiB)
    if not os.path.exists(path % 'stream.vmdk'):
        print('building a qcow2 and a VMDK with 2 GiB of data...',
              flush=True)
        raw = imagebuilder.sparse_raw(directory, 'data.raw', 4 * GiB,
                                      2 * GiB)
        imagebuilder.qemu_img('convert', '-f', 'raw', '-O', 'qcow2', raw,
                              path % 'data.qcow2')
        imagebuilder.qemu_img('convert', '-f', 'raw', '-O', 'vmdk', '-o',
                              'subformat=streamOptimized', raw,
                              path % 'stream.vmdk')
        os.unlink(raw)
    if guest:
        images['guest.qcow2'] = 'qcow2'
        if not os.path.exists(path % 'guest.qcow2'):
            build_guest(directory)
    return images


def build_guest(directory):
    """A whole-disk ext4 Ubuntu-like guest, no appliance (mkfs.ext4 -d)."""
    tree = os.path.join(directory, 'guest-tree')
    for sub in ('etc', 'bin', 'srv'):
        os.makedirs(os.path.join(tree, sub), exist_ok=True)
    with open(os.path.join(tree, 'etc', 'os-release'), 'w') as f:
        f.write('ID=ubuntu\nVERSION_ID="22.04"\nNAME="Ubuntu"\n')
    with open(os.path.join(tree, 'etc', 'fstab'), 'w') as f:
        f.write('/dev/sda / ext4 defaults 0 1\n')
    shutil.copy('/bin/ls', os.path.join(tree, 'bin', 'ls'))
    with open(os.path.join(tree, 'srv', 'blob'), 'wb') as f:
        f.write(os.urandom(100 * MiB))
    raw = os.path.join(directory, 'guest.raw')
    subprocess.run(['mkfs.ext4', '-q', '-F', '-d', tree, raw, '256M'],
                   check=True, capture_output=True)
    imagebuilder.qemu_img('convert', '-f', 'raw', '-O', 'qcow2', raw,
                          os.path.join(directory, 'guest.qcow2'))
    os.unlink(raw)
    shutil.rmtree(tree)


def qemu_img_info(fmt, target):
    subprocess.run(['qemu-img', 'info', '--output=json', '-f', fmt, target],
                   check=True, capture_output=True)


def whole(url, fmt, work):
    """Download whole into a sparse file, qemu-img info; (bytes, s)."""
    start = time.perf_counter()
    path = os.path.join(work, 'download')
    received = 0
    with requests.get(url, stream=True) as answer, open(path, 'wb') as f:
        answer.raise_for_status()
        for chunk in answer.iter_content(CHUNK):
            if chunk.count(0) != len(chunk):
                os.pwrite(f.fileno(), chunk, received)
            received += len(chunk)
        f.truncate(received)
    qemu_img_info(fmt, path)
    elapsed = time.perf_counter() - start
    os.unlink(path)
    return received, elapsed


def ranged(url, fmt, ws, conf, block_size, guest=False):
    """Header checks + qemu-img info (or the appliance) through the export.

    :returns: (bytes fetched, requests, seconds).
    """
    start = time.perf_counter()
    with ws.slot() as slot:
        with remote_image.open_remote(slot, url,
                                      block_size=block_size) as remote:
            header.inspect(remote, remote.size, fmt, conf)
            with remote.export() as export:
                if guest:
                    inspect_guest(export, fmt)
                else:
                    qemu_img_info(fmt, export.uri)
            stats = remote.stats()
    return stats.bytes_fetched, stats.requests, time.perf_counter() - start


def inspect_guest(export, fmt):
    import guestfs
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        g.set_backend_settings(config.BACKEND_SETTINGS)
        g.add_drive_opts('', protocol='nbd', server=export.server,
                         format=fmt, readonly=True)
        g.launch()
        for root in g.inspect_os():
            g.inspect_get_distro(root)
            g.inspect_get_major_version(root)
            g.inspect_get_arch(root)
        g.shutdown()
    finally:
        g.close()


def mib(n):
    return '%.2f' % (n / MiB)


def measure_all(args, work, images_dir):
    """Both tables, the guest when asked; images in *images_dir*."""
    images = build_images(images_dir, args.guest)
    conf = config.make_conf(os.path.join(work, 'ws'))
    ws = workspace.Workspace.from_conf(conf)
    server = webserver.Nginx(os.path.join(work, 'nginx'), images_dir,
                             limit_rate=args.limit_rate)
    os.makedirs(server.base_dir)
    with server:
        print('nginx limit_rate %s; median of %d runs; block 64 KiB'
              % (args.limit_rate, args.runs))
        print('%-12s %9s | %10s %8s | %10s %5s %8s | %7s %6s' % (
            'image', 'MiB', 'whole MiB', 'whole s', 'ranged MiB',
            'reqs', 'ranged s', 'read %', 'faster'))
        for name, fmt in images.items():
            if name.startswith('guest'):
                continue
            size = os.path.getsize(os.path.join(images_dir, name))
            url = server.url(name)
            got = [whole(url, fmt, work) for _ in range(args.runs)]
            rng = [ranged(url, fmt, ws, conf, 64 * KiB)
                   for _ in range(args.runs)]
            w_s = statistics.median(t for _, t in got)
            r_s = statistics.median(t for _, _, t in rng)
            fetched, reqs = rng[0][0], rng[0][1]
            print('%-12s %9s | %10s %8.2f | %10s %5d %8.2f | %7.3f '
                  '%5.1fx' % (name, mib(size), mib(got[0][0]), w_s,
                              mib(fetched), reqs, r_s,
                              100.0 * fetched / size, w_s / r_s))

        sizes = [int(s) * KiB for s in args.block_sizes.split(',')]
        print('\nranged path (header checks + qemu-img info) per block '
              'size: KiB fetched / requests')
        print('%-12s ' % 'image' + ' '.join(
            '%16s' % ('%d KiB' % (s // KiB)) for s in sizes))
        for name, fmt in images.items():
            if name.startswith('guest'):
                continue
            cells = []
            for block in sizes:
                fetched, reqs, _ = ranged(server.url(name), fmt, ws,
                                          conf, block)
                cells.append('%10d / %3d' % (fetched // KiB, reqs))
            print('%-12s ' % name + ' '.join(cells))

        if args.guest:
            size = os.path.getsize(os.path.join(images_dir,
                                                'guest.qcow2'))
            print('\nguest inspection through the export (%s MiB '
                  'qcow2): per block size' % mib(size))
            for block in sizes:
                fetched, reqs, secs = ranged(
                    server.url('guest.qcow2'), 'qcow2', ws, conf, block,
                    guest=True)
                print('%5d KiB blocks: %8s MiB (%.2f %%) in %4d requests'
                      ', %.1f s' % (block // KiB, mib(fetched),
                                    100.0 * fetched / size, reqs, secs))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--keep', help='build images in this directory')
    parser.add_argument('--limit-rate', default='0',
                        help="nginx limit_rate per connection ('125m')")
    parser.add_argument('--block-sizes', default='16,64,256,1024',
                        help='block sizes in KiB for the second table')
    parser.add_argument('--guest', action='store_true',
                        help='also inspect a guest with libguestfs')
    args = parser.parse_args()

    with scratch.scratch('qimg-remote-bench-', args.keep) as (work, images):
        measure_all(args, work, images)


if __name__ == '__main__':
    main()
