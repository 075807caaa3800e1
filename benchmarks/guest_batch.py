#!/usr/bin/env python3
"""Guest OS detection of 8 images: batched appliances against virt-inspector.

Builds 8 small guests without any download (tests/guestimages.py: Debian
12 and a clone of it, Ubuntu 22.04, Rocky 9.3 as streamOptimized VMDK,
AlmaLinux 9.2 with UEFI, Fedora 39 on LVM, and byte copies of the Ubuntu
and Rocky images), then prints, side by side in one run, the wall time
for all 8 and per image of:

* ``api.inspect_many()`` with guest detection on, the default options:
  groups of ``drives_per_appliance`` (4) images of one owner per
  appliance, ``max_workers`` (2) appliances at once; this includes the
  header checks, copies and qemu-img runs;
* the same with all 8 drives in one appliance (``drives_per_appliance``
  = 8), to show what the appliance sharing alone gives;
* ``virt-inspector --no-applications --no-icon`` run once per image,
  one after the other (the target: at least 3x slower per image than the
  first line);
* the same, two at a time (what running virt-inspector in parallel
  alone would give on the same cores).

It also checks that both tools found the same distribution and version.
Appliances run under software emulation here unless
LIBGUESTFS_BACKEND_SETTINGS says otherwise (see testkit/config.py).

    python benchmarks/guest_batch.py [--keep DIR] [--quick]
"""

import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from qimgintrospect import api  # noqa: E402
from qimgintrospect import exception  # noqa: E402
from qimgintrospect import opts  # noqa: E402
from testkit import config  # noqa: E402
from testkit import guestimages  # noqa: E402

BASE_GUESTS = ('debian', 'debian-clone', 'ubuntu', 'rocky', 'alma-uefi',
               'fedora-lvm')
COPIES = ('ubuntu', 'rocky')
TARGET = 3.0


def build_images(directory):
    """Return [(name, path, Glance disk format)] of the 8 images."""
    paths = guestimages.build(directory, BASE_GUESTS)
    images = [(n, paths[n], guestimages.GUESTS[n].disk_format)
              for n in BASE_GUESTS]
    for name in COPIES:
        root, ext = os.path.splitext(paths[name])
        copy = '%s-copy%s' % (root, ext)
        shutil.copyfile(paths[name], copy)
        images.append((name + '-copy', copy,
                       guestimages.GUESTS[name].disk_format))
    return images


def make_conf(directory, drives_per_appliance):
    conf = config.make_conf(os.path.join(directory, 'workspace'),
                            guest=True)
    if drives_per_appliance:
        conf.set_override('drives_per_appliance', drives_per_appliance,
                          opts.GUEST_GROUP)
    return conf


def run_batched(images, directory, drives_per_appliance=None):
    """Return (wall seconds, {name: (distro, version)})."""
    conf = make_conf(directory, drives_per_appliance)
    requests = [api.ImageRequest(path, disk_format, 'bench-owner')
                for _name, path, disk_format in images]
    start = time.perf_counter()
    results = api.inspect_many(requests, conf)
    wall = time.perf_counter() - start
    found = {}
    for (name, _path, _fmt), result in zip(images, results):
        if isinstance(result, exception.IntrospectionError):
            found[name] = ('error', result.code)
        else:
            details = result.details
            # libguestfs's own answer, as virt-inspector prints it.
            found[name] = (details.get('guest_distro'),
                           details.get('guest_major_version'))
    return wall, found


def virt_inspector(image):
    """Run virt-inspector on one image; return (distro, major version)."""
    _name, path, disk_format = image
    driver = {'vmdk': 'vmdk', 'qcow2': 'qcow2', 'raw': 'raw'}[disk_format]
    proc = subprocess.run(
        ['virt-inspector', '--no-applications', '--no-icon',
         '--format=' + driver, '-a', path],
        capture_output=True, text=True, env=guestimages.environment(),
        timeout=900)
    if proc.returncode != 0:
        return ('error', proc.stderr.strip().splitlines()[-1:])
    distro = re.search(r'<distro>([^<]*)</distro>', proc.stdout)
    major = re.search(r'<major_version>(\d+)</major_version>', proc.stdout)
    return (distro.group(1) if distro else None,
            int(major.group(1)) if major else None)


def run_virt_inspector(images, parallel=1):
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        answers = list(pool.map(virt_inspector, images))
    wall = time.perf_counter() - start
    return wall, {image[0]: answer for image, answer in zip(images, answers)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--keep', metavar='DIR',
                        help='build the images in DIR and keep them')
    parser.add_argument('--quick', action='store_true',
                        help='skip the two comparison lines (one large '
                             'appliance; virt-inspector two at a time)')
    args = parser.parse_args()
    directory = args.keep or tempfile.mkdtemp(prefix='guest-bench-')
    os.makedirs(directory, exist_ok=True)
    try:
        start = time.perf_counter()
        images = build_images(directory)
        print('built %d guests in %.0f s (not counted)'
              % (len(images), time.perf_counter() - start))
        rows = []
        wall, batched = run_batched(images, directory)
        rows.append(('inspect_many, default (4 drives/appliance, 2 at '
                     'once)', wall))
        if not args.quick:
            wall, _ = run_batched(images, directory, len(images))
            rows.append(('inspect_many, all 8 drives in one appliance',
                         wall))
        wall, inspected = run_virt_inspector(images)
        rows.append(('virt-inspector, once per image, one at a time', wall))
        if not args.quick:
            wall, _ = run_virt_inspector(images, parallel=2)
            rows.append(('virt-inspector, once per image, two at a time',
                         wall))
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)

    count = len(images)
    print()
    print('%-56s %9s %10s' % ('OS inspection of %d images' % count,
                              'total s', 'per image'))
    for label, wall in rows:
        print('%-56s %9.1f %10.1f' % (label, wall, wall / count))
    sequential = dict(rows)['virt-inspector, once per image, one at a time']
    speedup = sequential / rows[0][1]
    print('\nper image, default batching vs virt-inspector one at a time: '
          '%.1fx faster (target %.0fx: %s)'
          % (speedup, TARGET, 'met' if speedup >= TARGET else 'NOT met'))
    print('\n%-16s %-22s %-22s' % ('image', 'inspect_many', 'virt-inspector'))
    agree = True
    for name, _path, _fmt in images:
        print('%-16s %-22s %-22s' % (name, batched[name], inspected[name]))
        agree = agree and batched[name] == inspected[name]
    print('same distribution and major version everywhere: %s' % agree)
    return 0 if agree else 1


if __name__ == '__main__':
    sys.exit(main())
