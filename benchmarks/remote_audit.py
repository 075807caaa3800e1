#!/usr/bin/env python3
"""The audit of a Glance catalogue read by ranges against whole downloads.

Issue 12's benchmark. A real glance-api (testkit/glanceapi.py, the
filesystem store, served by uWSGI on loopback) holds four images, each
uploaded with PUT by a project of its own:

* ``sparse.raw``: a raw disk of ``--size-gib`` GiB with a GPT and nothing
  else (Glance stores and sends every byte of it);
* ``data.qcow2``: a qcow2 of that virtual size holding ``--data-gib`` GiB
  of random data;
* ``stream.vmdk``: the same data as a streamOptimized VMDK;
* ``guest.qcow2``: a real Linux guest: Debian 12's userland, dpkg
  database and kernel copied from this host
  (``testkit.guestimages.host_debian`` with ``HOST_TREES``) into an ext4
  partition of a ``--size-gib`` GiB disk.

For each image and each way (``[introspection_remote] read_mode`` =
``download``, then ``ranges``), the audit of that image's project runs in
a process of its own (``glance.audit.Audit``, as ``qimg-introspect
audit`` runs it, without the CLI's start-up) and the table gives: the
bytes read from Glance (``details.bytes_read``) and requests, the audit's
wall time, its peak RSS and that of its largest child (qemu-img, nbdkit,
the appliance), and the most the workspace held at once (its allocated
bytes, sampled every 50 ms). Format only (``--runs`` runs, median), then
with guest detection on the guest image (one run each way; one appliance
launch each, software emulation unless LIBGUESTFS_BACKEND_SETTINGS says
otherwise).

Targets: format only, under 1 % of the catalogue's bytes read and at
least 10x less wall time on the multi-GiB images; with guest detection,
under 10 % of the guest image's bytes; memory flat in image size; the
workspace holds only what was read.

    python benchmarks/remote_audit.py [--keep DIR] [--runs N]
        [--size-gib 4] [--data-gib 2] [--no-guest]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from testkit import config  # noqa: E402
from testkit import glanceapi  # noqa: E402
from testkit import guestimages  # noqa: E402
from testkit import imagebuilder  # noqa: E402
from testkit import scratch  # noqa: E402

GiB = 1024 ** 3
MiB = 1024 ** 2
WAYS = ('download', 'ranges')
#: name -> Glance disk format.
IMAGES = {'sparse.raw': 'raw', 'data.qcow2': 'qcow2',
          'stream.vmdk': 'vmdk', 'guest.qcow2': 'qcow2'}
_SAMPLE_INTERVAL = 0.05


def build_images(directory, size, data):
    """Build the images missing in *directory*; return {name: path}."""
    path = os.path.join(directory, '%s')
    if not os.path.exists(path % 'sparse.raw'):
        imagebuilder.partitioned_raw(directory, 'sparse.raw', size)
    if not os.path.exists(path % 'stream.vmdk'):
        print('building a qcow2 and a VMDK with %d GiB of data...'
              % (data // GiB), flush=True)
        raw = imagebuilder.sparse_raw(directory, 'data.tmp', size, data)
        imagebuilder.qemu_img('convert', '-f', 'raw', '-O', 'qcow2', raw,
                              path % 'data.qcow2')
        imagebuilder.qemu_img('convert', '-f', 'raw', '-O', 'vmdk', '-o',
                              'subformat=streamOptimized', raw,
                              path % 'stream.vmdk')
        os.unlink(raw)
    if not os.path.exists(path % 'guest.qcow2'):
        print('building a Debian guest from this host\'s files...',
              flush=True)
        guestimages.host_debian(directory, 'guest', size,
                                trees=guestimages.HOST_TREES)
    return {name: path % name for name in IMAGES}


def upload(server, paths):
    """Upload each image with PUT, each by a project of its own.

    :returns: {name: (project, image)}.
    """
    uploaded = {}
    for name, path in paths.items():
        project = glanceapi.new_project_id()
        started = time.perf_counter()
        image = glanceapi.upload_image(server.client(project), path,
                                       IMAGES[name], name=name)
        print('uploaded %s (%s) in %.0f s'
              % (name, size_text(image['size']),
                 time.perf_counter() - started), flush=True)
        uploaded[name] = (project, image)
    return uploaded


class WorkspacePeak(object):
    """The most bytes the files under a directory took at once."""

    def __init__(self, directory):
        self.directory = directory
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.wait(_SAMPLE_INTERVAL):
            total = 0
            for root, _dirs, files in os.walk(self.directory):
                for name in files:
                    try:
                        total += os.lstat(os.path.join(root,
                                                       name)).st_blocks * 512
                    except OSError:
                        continue
            self.peak = max(self.peak, total)


def run_audit(server, project, way, guest, work):
    """One audit of *project*'s images in a process of its own.

    :returns: the child's figures (see :func:`child`) and ``workspace``.
    """
    workspace = os.path.join(work, 'ws')
    conf_file = os.path.join(work, 'audit.conf')
    config.write_config_file(conf_file, config.overrides(
        workspace, guest=guest,
        introspection_workspace={'quota_mb': 64 * 1024,
                                 'slot_wait_timeout': 600},
        introspection_remote={'read_mode': way}))
    state = os.path.join(work, 'state-%s.sqlite' % time.monotonic_ns())
    with WorkspacePeak(workspace) as sampled:
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), '--child',
             server.url, project, conf_file, state],
            capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError('the audit failed: %s' % proc.stderr[-3000:])
    figures = json.loads(proc.stdout.splitlines()[-1])
    figures['workspace'] = sampled.peak
    return figures


def child(url, project, conf_file, state_path):
    """Run the audit of *project* once; print its figures as JSON."""
    from glanceclient import client as glanceclient
    from keystoneauth1 import session
    from keystoneauth1 import token_endpoint
    from oslo_config import cfg

    from qimgintrospect.glance import audit
    from qimgintrospect.glance import report as report_mod
    from qimgintrospect.glance import state as state_mod
    from qimgintrospect import opts

    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf(['--config-file', conf_file], project='qimgintrospect',
         default_config_files=[])
    auth = token_endpoint.Token(url, glanceapi.token(project))
    client = glanceclient.Client('2', session=session.Session(auth=auth))
    with state_mod.state_store(conf, state_path) as state:
        started = time.perf_counter()
        report = audit.Audit(client, conf, state, report_mod.Policy()).run(
            {'owner': project, 'status': 'active', 'visibility': 'all'})
        seconds = time.perf_counter() - started
    counts = report.counts.to_dict()
    if counts['inspected'] != 1 or counts['failed'] or counts['refused']:
        raise RuntimeError('the audit did not inspect the image: %s %s'
                           % (counts, report.rows))
    read, = report.reads.images
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps(dict(read, seconds=seconds, rss=self_rss * 1024,
                          child_rss=children_rss * 1024,
                          rows=[r._asdict() for r in report.rows])))


def size_text(nbytes):
    if nbytes >= GiB:
        return '%.2f GiB' % (nbytes / GiB)
    if nbytes >= MiB:
        return '%.1f MiB' % (nbytes / MiB)
    return '%.0f KiB' % (nbytes / 1024)


def measure(server, uploaded, names, guest, runs, work):
    """{(name, way): median figures} of *runs* audits each."""
    results = {}
    for name in names:
        project, _image = uploaded[name]
        for way in WAYS:
            figures = [run_audit(server, project, way, guest, work)
                       for _ in range(runs)]
            median = dict(figures[0])
            for key in ('seconds', 'rss', 'child_rss', 'workspace'):
                median[key] = statistics.median(f[key] for f in figures)
            results[name, way] = median
            print('  %s %s: %s read in %.1f s' % (
                name, way, size_text(median['bytes_read']),
                median['seconds']), flush=True)
    return results


def print_table(title, results, names):
    print('\n' + title)
    print('%-12s %9s | %-9s %9s %5s %7s %7s %7s %9s | %7s %7s' % (
        'image', 'size', 'way', 'read', 'reqs', 'wall s', 'RSS',
        'child', 'workspace', 'read %', 'faster'))
    totals = {way: [0, 0, 0.0] for way in WAYS}
    for name in names:
        whole = results[name, 'download']
        for way in WAYS:
            r = results[name, way]
            share = 100.0 * r['bytes_read'] / r['size']
            faster = whole['seconds'] / r['seconds']
            print('%-12s %9s | %-9s %9s %5d %7.2f %7s %7s %9s | %7.3f %6.1fx'
                  % (name if way == WAYS[0] else '',
                     size_text(r['size']) if way == WAYS[0] else '', way,
                     size_text(r['bytes_read']), r['requests'],
                     r['seconds'], size_text(r['rss']),
                     size_text(r['child_rss']), size_text(r['workspace']),
                     share, faster))
            totals[way][0] += r['size']
            totals[way][1] += r['bytes_read']
            totals[way][2] += r['seconds']
    if len(names) > 1:
        for way in WAYS:
            size, read, seconds = totals[way]
            print('%-12s %9s | %-9s %9s %5s %7.2f %7s %7s %9s | %7.3f %6.1fx'
                  % ('all' if way == WAYS[0] else '',
                     size_text(size) if way == WAYS[0] else '', way,
                     size_text(read), '', seconds, '', '', '',
                     100.0 * read / size,
                     totals['download'][2] / seconds))


def check_same_answers(results, names):
    """The rows of both ways must be the same; return the differences."""
    return [name for name in names
            if results[name, 'download']['rows']
            != results[name, 'ranges']['rows']]


def audit_both_ways(args, work, images_dir):
    """Audit the catalogue by download and by ranges; compare."""
    server = None
    try:
        paths = build_images(images_dir, args.size_gib * GiB,
                             args.data_gib * GiB)
        server = glanceapi.GlanceServer(os.path.join(work, 'glance'))
        server.start()
        uploaded = upload(server, paths)
        names = list(IMAGES)
        print('\nformat only, median of %d audits per image and way:'
              % args.runs, flush=True)
        results = measure(server, uploaded, names, False, args.runs, work)
        print_table('Format only (glance-api on loopback, file store; '
                    'median of %d)' % args.runs, results, names)
        differ = check_same_answers(results, names)
        if not args.no_guest:
            print('\nwith guest detection, one audit per way:', flush=True)
            guest = measure(server, uploaded, ['guest.qcow2'], True, 1, work)
            print_table('With guest detection (one appliance each, %s)'
                        % (':'.join(config.BACKEND_SETTINGS) or 'KVM'),
                        guest, ['guest.qcow2'])
            os_rows = [r for r in guest['guest.qcow2', 'ranges']['rows']
                       if r['property'] == 'os_distro']
            print('os_distro found by ranges: %s' % (
                [r['image'] for r in os_rows] or 'none'))
            differ += check_same_answers(guest, ['guest.qcow2'])
        print('\nanswers (report rows) the same both ways: %s'
              % ('yes' if not differ else 'NO: %s' % differ))
    finally:
        if server is not None:
            server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--keep', help='build the images in this directory '
                                       'and keep them for the next run')
    parser.add_argument('--runs', type=int, default=3,
                        help='format-only audits per image and way')
    parser.add_argument('--size-gib', type=int, default=4)
    parser.add_argument('--data-gib', type=int, default=2)
    parser.add_argument('--no-guest', action='store_true',
                        help='skip the audits with guest detection')
    args = parser.parse_args()

    with scratch.scratch('qimg-remote-audit-', args.keep) as (work, images):
        audit_both_ways(args, work, images)


if __name__ == '__main__':
    if sys.argv[1:2] == ['--child']:
        child(*sys.argv[2:6])
    else:
        main()
