#!/usr/bin/env python3
"""Speed and memory of qimgintrospect against the bare qemu-img it wraps.

Prints, side by side in one run, for each image:

* bare ``qemu-img info --output=json -f FMT`` (a child process);
* the core API, ``qimgintrospect.api.inspect()``, called in-process
  (header checks, workspace copy, qemu-img under prlimit, normaliser);
* the ``qimg-introspect inspect -f json`` CLI (a child process, so it
  includes Python's start-up and imports).

Wall time is the median of --runs runs. Memory is the peak resident set
of the child processes (measured in one more run under GNU time), and for
the in-process API
the peak of Python allocations during one call (tracemalloc) plus the
largest child (qemu-img).

Then it times the header check alone (``inspectors.header.inspect`` on
the open file: every format inspector, qemu's probe table, the format's
reader with its whole-table checks) and qemu's probe table alone, on the
same images plus one of every other format and a qcow2 with many
snapshots; and it copies a sparse 10 GiB raw image holding 100 MiB of data
into the workspace and prints the bytes copied against the bytes
allocated.

Targets (issue 2): in-process time at most 1.5x bare qemu-img; workspace
bytes within 10 % of the allocated bytes. Issue 9: the probe table and
the whole-table checks add under 1 ms per image to the header check (run
``--header-only`` on this tree and on one without them, and compare).

    python benchmarks/inspect_vs_qemu_img.py [--runs N] [--keep DIR]
                                             [--header-only]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from qimgintrospect import api  # noqa: E402
from qimgintrospect.inspectors import header  # noqa: E402
from qimgintrospect import source  # noqa: E402
from qimgintrospect import workspace  # noqa: E402
from testkit import config  # noqa: E402
from testkit import hostileimages  # noqa: E402
from testkit import imagebuilder  # noqa: E402

try:
    from qimgintrospect.inspectors import probe  # noqa: E402
except ImportError:
    # A tree from before qemu's probe table (to compare against).
    probe = None

MiB = 1024 * 1024
GiB = 1024 * MiB


def wall_of(cmd):
    """Run *cmd* once; return its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return time.perf_counter() - start


def peak_rss_of(cmd):
    """Run *cmd* once under GNU time; return its peak RSS in KiB.

    GNU time forks the command itself: a child forked from this (large)
    Python process would report this process's own peak in ru_maxrss,
    since the kernel carries the high-water mark of the memory it had
    before exec.
    """
    proc = subprocess.run(['/usr/bin/time', '-f', '%M'] + cmd,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, check=True)
    return int(proc.stderr.split()[-1])


def run_api(path, disk_format, conf):
    start = time.perf_counter()
    api.inspect(path, disk_format, conf)
    return time.perf_counter() - start


def api_memory(path, disk_format, conf):
    """Peak Python allocations during one call, in KiB."""
    tracemalloc.start()
    try:
        api.inspect(path, disk_format, conf)
        return tracemalloc.get_traced_memory()[1] // 1024
    finally:
        tracemalloc.stop()


def build_images(directory):
    images = [
        ('small qcow2 (64 MiB)', 'qcow2',
         imagebuilder.create(directory, 'small.qcow2', 'qcow2', 64 * MiB)),
        ('small vmdk streamOptimized', 'vmdk',
         imagebuilder.vmdk(directory, 'small.vmdk', 'streamOptimized',
                           'buslogic')),
        ('sparse raw 8 GiB (GPT)', 'raw',
         imagebuilder.partitioned_raw(directory, 'sparse.raw', 8 * GiB)),
        ('sparse qcow2 8 GiB', 'qcow2',
         imagebuilder.create(directory, 'sparse.qcow2', 'qcow2', 8 * GiB)),
        ('sparse vhdx 8 GiB', 'vhdx',
         imagebuilder.create(directory, 'sparse.vhdx', 'vhdx', 8 * GiB)),
    ]
    return images


def cli_command():
    script = shutil.which('qimg-introspect',
                          path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, '-m',
                                    'qimgintrospect.cmd.shell']


def bench_images(images, conf, config_file, runs):
    header = ('%-28s %12s %12s %12s %7s   %10s %14s %10s'
              % ('image', 'qemu-img ms', 'api ms', 'cli ms', 'api/q',
                 'qemu KiB', 'api KiB(py+q)', 'cli KiB'))
    print(header)
    print('-' * len(header))
    for label, disk_format, path in images:
        qemu_fmt = 'vpc' if disk_format == 'vhd' else disk_format
        bare_cmd = ['qemu-img', 'info', '--output=json', '-f', qemu_fmt,
                    path]
        bare = [wall_of(bare_cmd) for _ in range(runs)]
        run_api(path, disk_format, conf)       # warm caches and imports
        in_process = [run_api(path, disk_format, conf) for _ in range(runs)]
        py_kib = api_memory(path, disk_format, conf)
        cli_cmd = cli_command() + ['inspect', path, '-f', 'json',
                                   '--disk-format', disk_format,
                                   '--config-file', config_file]
        cli = [wall_of(cli_cmd) for _ in range(max(runs // 5, 3))]
        q_ms = statistics.median(bare) * 1000
        a_ms = statistics.median(in_process) * 1000
        c_ms = statistics.median(cli) * 1000
        q_kib = peak_rss_of(bare_cmd)
        print('%-28s %12.2f %12.2f %12.1f %6.2fx   %10d %8d+%-5d %10d'
              % (label, q_ms, a_ms, c_ms, a_ms / q_ms, q_kib, py_kib, q_kib,
                 peak_rss_of(cli_cmd)))


def header_images(directory, images):
    """The benchmark's images, plus one of every other format."""
    more = [
        ('vhd dynamic', 'vhd',
         imagebuilder.create(directory, 'small.vhd', 'vhd', 64 * MiB)),
        ('vhd fixed', 'vhd',
         imagebuilder.create(directory, 'fixed.vhd', 'vhd', 64 * MiB,
                             {'subformat': 'fixed'})),
        ('vdi', 'vdi',
         imagebuilder.create(directory, 'small.vdi', 'vdi', 64 * MiB)),
        ('vmdk monolithicSparse', 'vmdk',
         imagebuilder.vmdk(directory, 'sparse.vmdk')),
        ('iso', 'iso', imagebuilder.iso(directory, 'small.iso')),
        ('raw (MBR)', 'raw',
         imagebuilder.partitioned_raw(directory, 'mbr.raw', 64 * MiB,
                                      'dos')),
        ('qcow2, 100 snapshots', 'qcow2',
         hostileimages.qcow2_with_snapshots(directory, 'snap.qcow2', 100)),
    ]
    return images + more


def time_header(path, disk_format, conf):
    """Seconds the header check takes on *path*, the file opened."""
    with source.open_image(path) as image:
        start = time.perf_counter()
        header.inspect(image.fd, image.size, disk_format, conf)
        return time.perf_counter() - start


def time_probe(path):
    """Seconds qemu's probe table takes on the first bytes of *path*."""
    with open(path, 'rb') as f:
        head = f.read(probe.PROBE_WINDOW)
    start = time.perf_counter()
    probe.probe(head)
    return time.perf_counter() - start


def bench_header(images, conf, runs):
    print()
    head = '%-28s %12s %12s' % ('image', 'header ms', 'probe ms')
    print(head)
    print('-' * len(head))
    for label, disk_format, path in images:
        time_header(path, disk_format, conf)     # warm the page cache
        header_ms = 1000 * statistics.median(
            time_header(path, disk_format, conf) for _ in range(runs))
        probe_ms = ('%12.3f' % (1000 * statistics.median(
            time_probe(path) for _ in range(runs))) if probe else
            '%12s' % '-')
        print('%-28s %12.3f %s' % (label, header_ms, probe_ms))


def bench_workspace(directory, conf):
    path = imagebuilder.sparse_raw(directory, 'ten.raw', 10 * GiB, 100 * MiB)
    ws = workspace.Workspace.from_conf(conf)
    with source.open_image(path) as image, ws.slot() as slot:
        start = time.perf_counter()
        copy = slot.private_copy(image)
        wall = time.perf_counter() - start
        written = os.stat(copy.path).st_blocks * 512
        allocated = image.allocated
    print()
    print('workspace copy of a sparse 10 GiB raw with 100 MiB of data')
    print('  method %s, %.0f ms' % (copy.method, wall * 1000))
    print('  allocated in source : %12d bytes' % allocated)
    print('  bytes copied        : %12d bytes (%.3fx)'
          % (copy.bytes_copied, copy.bytes_copied / allocated))
    print('  allocated in copy   : %12d bytes (%.3fx)'
          % (written, written / allocated))
    print('  virtual size        : %12d bytes' % (10 * GiB))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=30)
    parser.add_argument('--keep', help='build images in this directory')
    parser.add_argument('--header-only', action='store_true',
                        help='time the header check only')
    args = parser.parse_args()
    directory = args.keep or tempfile.mkdtemp(prefix='qimg-bench-')
    try:
        # Format inspection only: guest detection is in guest_batch.py.
        workspace_dir = os.path.join(directory, 'workspace')
        conf = config.make_conf(workspace_dir)
        config_file = os.path.join(directory, 'bench.conf')
        config.write_config_file(config_file,
                                 config.overrides(workspace_dir))
        print('qemu-img: %s' % subprocess.run(
            ['qemu-img', '--version'], capture_output=True,
            text=True).stdout.splitlines()[0])
        print('runs per figure: %d (median wall time)\n' % args.runs)
        images = build_images(directory)
        if not args.header_only:
            bench_images(images, conf, config_file, args.runs)
        bench_header(header_images(directory, images), conf, args.runs)
        if not args.header_only:
            bench_workspace(directory, conf)
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == '__main__':
    main()
