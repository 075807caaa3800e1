#!/usr/bin/env python3
"""The audit of one catalogue by 1, 2 and 3 workers on this machine.

Starts a real glance-api (testkit/glanceapi.py), a redis-server and a
PostgreSQL (testkit/dbservers.py), uploads a catalogue of small
format-only images (qcow2, streamOptimized VMDK and raw, in several
tenants) and a handful of real guests built without any download
(testkit/guestimages.py), and audits it with 1, 2 and 3
``qimg-introspect audit --coordination ... --state-connection ...``
processes started together (a new state database each time, so every
image is inspected), in two phases:

* format-only: the small images, guest detection off;
* guest detection: the guests, guest detection on (appliances under
  software emulation here, see testkit/config.py).

Each worker is this script in child mode: the real CLI, with timers
around the steps of an image (thread-seconds summed over the worker's
threads), which it writes out when it ends. The table gives per phase
and worker count: images per minute (the whole catalogue over the wall
time from the first start to the last end), the share each worker took,
CPU seconds per image (the workers and their qemu-img and appliance
children; Glance's own CPU is not in it), and where the time of an image
goes: download, header check, private copy, qemu-img, appliance launch,
appliance inspection, claims (tooz) and records (the state database).

    python benchmarks/audit_workers.py [--images 240] [--workers 1,2,3]
                                       [--no-guests] [--keep DIR]
"""

import argparse
import collections
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

#: The steps timed in each worker: (label, module, attribute path).
STEPS = (
    ('download', 'qimgintrospect.glance.client', '_receive'),
    ('header', 'qimgintrospect.inspectors.header', 'inspect'),
    ('copy', 'qimgintrospect.workspace', 'Slot.private_copy'),
    ('qemu-img', 'qimgintrospect.inspectors.qemu_img', 'inspect'),
    ('launch', 'qimgintrospect.inspectors.guest.appliance',
     'Appliance._launch'),
    ('inspect', 'qimgintrospect.inspectors.guest.census', 'answer_drives'),
    ('claims', 'qimgintrospect.glance.coordination', 'GroupMember.claim'),
    ('claims', 'qimgintrospect.glance.coordination', 'Claim.release'),
    ('claims', 'qimgintrospect.glance.coordination', 'GroupMember.refresh'),
    ('records', 'qimgintrospect.glance.state', 'StateStore._call'),
    # Once its walk is over, a worker waits for the others: its looks at
    # the group and the journal then are waiting, not the cost of an
    # image (the outermost timed call counts, not the calls within it).
    ('waiting', 'qimgintrospect.glance.workers', 'Share.takeable'),
    ('waiting', 'qimgintrospect.glance.workers', 'Share.pause'),
)
COLUMNS = ('download', 'header', 'copy', 'qemu-img', 'launch', 'inspect',
           'claims', 'records', 'waiting')
GUEST_NAMES = ('debian', 'ubuntu', 'rocky', 'alma-uefi')
#: Guests per tenant: 3 tenants, 8 guests, batches of up to 4 per
#: appliance.
GUEST_TENANTS = (('debian', 'ubuntu', 'rocky'),
                 ('alma-uefi', 'debian', 'ubuntu'),
                 ('rocky', 'alma-uefi'))


# -- child mode: one worker ---------------------------------------------

def _install_timers(totals, mutex):
    import importlib
    inside = threading.local()
    for label, module_name, path in STEPS:
        try:
            owner = importlib.import_module(module_name)
            *parents, name = path.split('.')
            for parent in parents:
                owner = getattr(owner, parent)
            original = getattr(owner, name)
        except (ImportError, AttributeError):
            continue  # renamed by another version: that column stays 0

        def timed(*args, __original=original, __label=label, **kwargs):
            if getattr(inside, 'label', None) is not None:
                return __original(*args, **kwargs)
            inside.label = __label
            start = time.perf_counter()
            try:
                return __original(*args, **kwargs)
            finally:
                spent = time.perf_counter() - start
                inside.label = None
                with mutex:
                    totals[__label][0] += 1
                    totals[__label][1] += spent

        setattr(owner, name, timed)


def child(timings_path, argv):
    """Run the CLI with *argv*, timing its steps into *timings_path*."""
    totals = collections.defaultdict(lambda: [0, 0.0])
    mutex = threading.Lock()
    _install_timers(totals, mutex)
    from qimgintrospect.cmd import shell
    # The CLI reads its own command line to choose the auth plugin.
    sys.argv = ['qimg-introspect'] + list(argv)
    started = time.monotonic()
    code = 1
    try:
        code = shell.main(argv)
    finally:
        usage = [resource.getrusage(who) for who in (
            resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        with open(timings_path, 'w') as f:
            json.dump({'steps': {k: v for k, v in totals.items()},
                       'wall': time.monotonic() - started,
                       'cpu': sum(u.ru_utime + u.ru_stime for u in usage),
                       'code': code}, f)
    sys.exit(code)


# -- parent mode: the catalogue and the runs ------------------------------

def _upload_all(glance, uploads):
    """Upload one after the other.

    The test glance-api keeps its catalogue in SQLite, whose writers lock
    each other out.
    """
    from testkit import glanceapi
    return [glanceapi.upload_image(glance.client(project), path,
                                   disk_format)['id']
            for project, path, disk_format in uploads]


def format_only_catalogue(glance, directory, count, tenants=12):
    from testkit import glanceapi
    from testkit import imagebuilder
    kinds = [
        (imagebuilder.create(directory, 'small.qcow2', 'qcow2'), 'qcow2'),
        (imagebuilder.vmdk(directory, 'small.vmdk',
                           subformat='streamOptimized'), 'vmdk'),
        (imagebuilder.create(directory, 'small.raw', 'raw',
                             size=imagebuilder.MiB), 'raw'),
    ]
    projects = [glanceapi.new_project_id() for _ in range(tenants)]
    return _upload_all(glance, [
        (projects[n % tenants],) + kinds[n % len(kinds)]
        for n in range(count)])


def guest_catalogue(glance, directory):
    from testkit import glanceapi
    from testkit import guestimages
    paths = guestimages.build(directory, GUEST_NAMES)
    uploads = []
    for names in GUEST_TENANTS:
        project = glanceapi.new_project_id()
        uploads += [(project, paths[n], guestimages.GUESTS[n].disk_format)
                    for n in names]
    return _upload_all(glance, uploads)


def run_workers(count, glance, redis, postgres, directory, guest, images):
    """Audit with *count* workers; return the figures of the run."""
    from testkit import config
    from testkit import glanceapi
    database = 'bench_%s' % uuid.uuid4().hex[:10]
    postgres.psql('CREATE DATABASE %s' % database, database='postgres')
    run_dir = tempfile.mkdtemp(prefix='run-%d-' % count, dir=directory)
    procs = []
    glance_cpu = _cpu_of(glance.process.pid)
    started = time.monotonic()
    for n in range(count):
        conf = os.path.join(run_dir, 'w%d.conf' % n)
        config.write_config_file(conf, config.overrides(
            os.path.join(run_dir, 'w%d-workspace' % n), guest=guest,
            introspection_audit={'refresh_interval': 2, 'page_size': 25}))
        timings = os.path.join(run_dir, 'w%d.json' % n)
        argv = ['audit', '-f', 'json', '--no-progress', '--config-file',
                conf, '--coordination', redis.url(),
                '--state-connection', postgres.url(database=database)]
        argv += glanceapi.auth_args(glance.url, glanceapi.new_project_id())
        out = open(os.path.join(run_dir, 'w%d.out' % n), 'w')
        err = open(os.path.join(run_dir, 'w%d.err' % n), 'w')
        procs.append((subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), '--child', timings,
             '--'] + argv, stdout=out, stderr=err, cwd=REPO), out, err,
            timings))
    for proc, out, err, _ in procs:
        proc.wait()
        out.close()
        err.close()
    wall = time.monotonic() - started
    glance_cpu = _cpu_of(glance.process.pid) - glance_cpu
    reports, timings = [], []
    for n, (proc, out, err, timings_path) in enumerate(procs):
        if proc.returncode != 0:
            with open(err.name) as f:
                raise SystemExit('worker %d exited %d:\n%s' % (
                    n, proc.returncode, f.read()[-3000:]))
        with open(out.name) as f:
            reports.append(json.load(f))
        with open(timings_path) as f:
            timings.append(json.load(f))
    counts = reports[0]['summary']['images']
    inspected = counts['inspected']
    if inspected != images:
        raise SystemExit('%d of %d images inspected: %s' % (
            inspected, images, counts))
    shares = sorted((f['inspected'] for f in reports[0]['summary']['run'][
        'workers']), reverse=True)
    steps = collections.Counter()
    for t in timings:
        for label, (_, seconds) in t['steps'].items():
            steps[label] += seconds
    return {'workers': count, 'wall': wall, 'images': inspected,
            'per_minute': 60.0 * inspected / wall, 'shares': shares,
            'cpu_per_image': sum(t['cpu'] for t in timings) / inspected,
            'steps': {label: steps[label] / inspected for label in COLUMNS},
            'cores_busy': sum(t['cpu'] for t in timings) / wall,
            'glance_cpu_per_image': glance_cpu / inspected}


def _cpu_of(pid):
    """CPU seconds of process *pid* and its children (uWSGI's worker)."""
    import psutil
    process = psutil.Process(pid)
    total = 0.0
    for p in [process] + process.children(recursive=True):
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def print_table(phase, rows):
    print('\n%s' % phase)
    header = ('workers', 'wall s', 'img/min', 'share', 'CPU s/img',
              'cores', 'Glance') + COLUMNS
    widths = (7, 7, 8, 9, 9, 5, 6) + (8,) * len(COLUMNS)
    print('  '.join(h.rjust(w) for h, w in zip(header, widths)))
    for r in rows:
        cells = ('%d' % r['workers'], '%.1f' % r['wall'],
                 '%.1f' % r['per_minute'],
                 '/'.join('%d' % s for s in r['shares']),
                 '%.3f' % r['cpu_per_image'], '%.2f' % r['cores_busy'],
                 '%.3f' % r['glance_cpu_per_image'])
        cells += tuple(_seconds(r['steps'][c]) for c in COLUMNS)
        print('  '.join(c.rjust(w) for c, w in zip(cells, widths)))
    print('  (CPU s/img: the workers and their qemu-img and appliance '
          'children; cores: that CPU over\n  the wall time; Glance: '
          'glance-api\'s CPU s per image; the step columns: thread-seconds '
          'per\n  image, summed over the workers\' threads)')


def _seconds(value):
    if value == 0:
        return '-'
    if value < 0.1:
        return '%.1f ms' % (value * 1000)
    return '%.2f s' % value


def conclusions(fmt_rows, guest_rows):
    print('\nWhere the time goes')
    if fmt_rows:
        one = fmt_rows[0]
        coordination = one['steps']['claims'] + one['steps']['records']
        print('  format-only, 1 worker: %.0f ms of claims and records per '
              'image, %.0f ms of download,\n  header, copy and qemu-img; '
              '%.2f cores busy in the workers alone (Glance, serving\n  the '
              'same images on the same cores, is not counted).' % (
                  coordination * 1000, 1000 * sum(
                      one['steps'][c] for c in ('download', 'header', 'copy',
                                                'qemu-img')),
                  one['cores_busy']))
    if guest_rows:
        one = guest_rows[0]
        appliance = one['steps']['launch'] + one['steps']['inspect']
        rest = sum(one['steps'][c] for c in COLUMNS) - appliance
        print('  guest detection, 1 worker: the appliance takes %.1f s per '
              'image (launch %.1f s, inspection %.1f s),\n  everything else '
              '%.2f s: %.0f%% of an image\'s time is the appliance, '
              '%.2f cores busy.' % (
                  appliance, one['steps']['launch'], one['steps']['inspect'],
                  rest, 100.0 * appliance / (appliance + rest),
                  one['cores_busy']))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=240)
    parser.add_argument('--workers', default='1,2,3')
    parser.add_argument('--no-guests', action='store_true')
    parser.add_argument('--keep', metavar='DIR',
                        help='work in DIR and keep it (logs, reports)')
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(',')]

    from testkit import config
    from testkit import dbservers
    from testkit import glanceapi
    directory = args.keep or tempfile.mkdtemp(prefix='qimg-bench-workers-')
    os.makedirs(directory, exist_ok=True)
    glance = glanceapi.GlanceServer(os.path.join(directory, 'glance'))
    print('%d CPU(s) on this host, shared; guest appliances with backend '
          'settings %s.' % (os.cpu_count(),
                            ':'.join(config.BACKEND_SETTINGS) or '(none)'))
    try:
        glance.start()
        with dbservers.RedisServer() as redis, \
                dbservers.PostgresServer() as postgres:
            images = os.path.join(directory, 'images')
            os.makedirs(images, exist_ok=True)
            start = time.monotonic()
            fmt_ids = format_only_catalogue(glance, images, args.images)
            print('Uploaded %d format-only images in %.0f s.' % (
                len(fmt_ids), time.monotonic() - start))
            fmt_rows = []
            for count in counts:
                fmt_rows.append(run_workers(count, glance, redis, postgres,
                                            directory, False,
                                            len(fmt_ids)))
            guest_rows = []
            if not args.no_guests:
                # A catalogue of its own: the small images would each
                # cost an appliance too.
                guest_glance = glanceapi.GlanceServer(
                    os.path.join(directory, 'glance-guests'))
                guest_glance.start()
                try:
                    guest_ids = guest_catalogue(guest_glance, images)
                    for count in counts:
                        guest_rows.append(run_workers(
                            count, guest_glance, redis, postgres, directory,
                            True, len(guest_ids)))
                finally:
                    guest_glance.stop()
        print_table('Format-only: %d images, guest detection off'
                    % len(fmt_ids), fmt_rows)
        if guest_rows:
            print_table('Guest detection: %d guests of %d tenants, '
                        'drives_per_appliance 4, max_workers 2 per worker'
                        % (len(guest_ids), len(GUEST_TENANTS)), guest_rows)
        conclusions(fmt_rows, guest_rows)
    finally:
        glance.stop()
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == '__main__':
    if len(sys.argv) > 2 and sys.argv[1] == '--child':
        child(sys.argv[2], sys.argv[4:])
    main()
