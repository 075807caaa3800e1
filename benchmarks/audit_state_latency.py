#!/usr/bin/env python3
"""What the audit's coordination costs per image: claims and records.

Starts a real redis-server and a real PostgreSQL (testkit/dbservers.py) in
temporary directories and prints, for N images, the median and 90th
percentile latency of:

* the state store's ``get`` and ``put`` (one record per image) and
  ``journal`` on a SQLite file and on PostgreSQL over 127.0.0.1, beside a
  bare INSERT ... ON CONFLICT with psycopg2 / sqlite3 (the plain tool);
* a claim and its release (a tooz lock over Redis), beside a bare
  ``SET NX PX`` + ``DEL`` with the redis client, and ``owns()`` (the hash
  ring, in memory) and ``refresh()`` (a group read);

and what that adds up to per image, against what inspecting an image
costs (milliseconds for format-only, tens of seconds with guest
detection under emulation): the coordination is not where the time goes.

    python benchmarks/audit_state_latency.py [--images N]
"""

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import psycopg2  # noqa: E402
import redis  # noqa: E402

from qimgintrospect.glance import coordination  # noqa: E402
from qimgintrospect.glance import state  # noqa: E402
from qimgintrospect import normalise  # noqa: E402
from testkit import dbservers  # noqa: E402

RESULT = normalise.Result(
    {'disk_format': 'qcow2', 'os_distro': 'ubuntu', 'os_version': '22.04',
     'architecture': 'x86_64', 'hw_firmware_type': 'uefi'},
    {'virtual_size': 10737418240, 'cluster_size': 65536}, [])


def timed(fn, args_list):
    """Call fn(*args) for each; return the latencies in milliseconds."""
    out = []
    for args in args_list:
        start = time.perf_counter()
        fn(*args)
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def line(name, latencies):
    ordered = sorted(latencies)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    print('  %-46s median %8.3f ms   p90 %8.3f ms' % (
        name, statistics.median(ordered), p90))
    return statistics.median(ordered)


def store_figures(label, location, images, plain):
    store = state.StateStore(location, 'bench', worker='bench.1')
    try:
        print('%s:' % label)
        put = line('StateStore.put (new record)', timed(
            store.put, [(i, 'sum', RESULT) for i in images]))
        get = line('StateStore.get (found)', timed(
            store.get, [(i, 'sum') for i in images]))
        journal = line('StateStore.journal', timed(
            store.journal, [(i, RESULT, []) for i in images]))
        line('plain INSERT ... ON CONFLICT (driver, own tx)', timed(
            plain, [(i,) for i in images]))
        return put + get + journal
    finally:
        store.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=300)
    args = parser.parse_args()
    images = [str(uuid.uuid4()) for _ in range(args.images)]
    print('%d images, one operation each; this host has %d CPU(s), '
          'shared.\n' % (args.images, os.cpu_count()))

    with tempfile.TemporaryDirectory() as tmp, \
            dbservers.PostgresServer() as pg, \
            dbservers.RedisServer() as rds:
        path = os.path.join(tmp, 'state', 'audit.sqlite')
        plain_db = sqlite3.connect(os.path.join(tmp, 'plain.sqlite'),
                                   isolation_level=None)
        plain_db.execute('PRAGMA journal_mode=WAL')
        plain_db.execute('CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)')

        def sqlite_plain(key):
            plain_db.execute('INSERT INTO t VALUES (?, ?) ON CONFLICT(k) '
                             'DO UPDATE SET v = excluded.v', (key, 'x'))

        sqlite_ms = store_figures('SQLite file', path, images, sqlite_plain)

        pg.psql('CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)')
        conn = psycopg2.connect(host='127.0.0.1', port=pg.port,
                                user=pg.user, dbname=pg.database)

        def pg_plain(key):
            with conn, conn.cursor() as cur:
                cur.execute('INSERT INTO t VALUES (%s, %s) ON CONFLICT (k) '
                            'DO UPDATE SET v = excluded.v', (key, 'x'))

        pg_ms = store_figures('PostgreSQL 127.0.0.1', pg.url(), images,
                              pg_plain)
        conn.close()

        print('Redis 127.0.0.1 (tooz):')
        with coordination.GroupMember(rds.url()) as member:
            def claim_release(image_id):
                member.claim(image_id).release()
            claim_ms = line('claim + release', timed(
                claim_release, [(i,) for i in images]))
            line('owns (hash ring in memory)', timed(
                member.owns, [(i,) for i in images]))
            line('refresh (run watchers, read group)', timed(
                member.refresh, [()] * 50))
        client = redis.Redis(port=rds.port)

        def plain_lock(key):
            client.set('plain-' + key, 'x', nx=True, px=30000)
            client.delete('plain-' + key)
        line('plain SET NX PX + DEL (redis client)', timed(
            plain_lock, [(i,) for i in images]))
        client.close()

    print('\nPer image, coordination and records (claim, get, put, '
          'journal):')
    print('  with SQLite     %7.2f ms' % (claim_ms + sqlite_ms))
    print('  with PostgreSQL %7.2f ms' % (claim_ms + pg_ms))
    print('An image costs milliseconds to seconds to inspect format-only '
          '(download included)\nand tens of seconds with guest detection '
          'under emulation: the appliance, not the\ncoordination, bounds '
          'the rate per host.')


if __name__ == '__main__':
    main()
