#!/usr/bin/env python3
"""Fuzz the header checks: mutate valid images, inspect, count outcomes.

    .venv/bin/python tools/fuzz.py [--cases N] [--first K] [--seed NAME]
                                   [--polyglot] [--keep DIR] [--verbose]

Builds one small valid image of every format (qemu-img, genisoimage,
sfdisk), then runs N mutated cases through the core API in-process, cases
spread evenly over the seeds. Prints the count of every outcome (``ok``
or an error code) per seed and overall, the elapsed time, and every case
that broke a guarantee (internal error, untyped exception, a refusal that
only qemu-img's answer caught, a process or workspace file left behind, no
answer in time). Cases are deterministic: ``--first K --cases 1`` replays
case K (case K uses seed K modulo the number of seeds). Exits 1 when any
case broke a guarantee.

With ``--polyglot``, cases are images that are two formats at once
instead: another format's header, descriptor or magic (whole, cut, its
version changed, tied with a VDI signature, behind comment lines) written
into the boot code of an MBR, a GPT, an ISO system area or a blank raw
disk, at byte 0, 512 or 2048; outcomes are counted per carrier, payload
and offset. ``tools/probe_parity.py`` runs the same cases against qemu's
own guess.
"""

#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.

import argparse
import collections
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from qimgintrospect import opts  # noqa: E402
from testkit import config  # noqa: E402
from testkit import fuzzer  # noqa: E402


def _conf(workspace):
    conf = config.make_conf(workspace)
    conf.set_override('timeout', 20, opts.QEMU_IMG_GROUP)
    return conf


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--cases', type=int, default=5000,
                        help='number of cases (default 5000)')
    parser.add_argument('--first', type=int, default=0,
                        help='number of the first case (default 0)')
    parser.add_argument('--seed', metavar='NAME', action='append',
                        help='only cases of this seed image (repeatable; '
                             'e.g. qcow2-v3, vmdk-streamOptimized)')
    parser.add_argument('--polyglot', action='store_true',
                        help='cases are polyglots (two formats at once)')
    parser.add_argument('--keep', metavar='DIR',
                        help='copy the image of every problem case here')
    parser.add_argument('--verbose', action='store_true',
                        help='print every case')
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix='qimg-fuzz-') as tmp:
        seeds_dir = os.path.join(tmp, 'seeds')
        cases_dir = os.path.join(tmp, 'cases')
        workspace = os.path.join(tmp, 'workspace')
        os.makedirs(seeds_dir)
        os.makedirs(cases_dir)
        conf = _conf(workspace)
        if args.polyglot:
            material = fuzzer.build_polyglot_material(seeds_dir)
            seeds = [None]
        else:
            seeds = fuzzer.build_seeds(seeds_dir)
        per_seed = collections.defaultdict(collections.Counter)
        overall = collections.Counter()
        problems = []
        slowest = None
        started = time.monotonic()
        ran = 0
        for case in range(args.first, args.first + args.cases):
            seed = seeds[case % len(seeds)]
            if args.polyglot:
                outcome = fuzzer.run_polyglot_case(material, case, cases_dir,
                                                   conf, workspace)
            elif args.seed and seed.name not in args.seed:
                continue
            else:
                outcome = fuzzer.run_case(seed, case, cases_dir, conf,
                                          workspace)
            ran += 1
            per_seed[outcome.seed][outcome.code] += 1
            overall[outcome.code] += 1
            if slowest is None or outcome.elapsed > slowest.elapsed:
                slowest = outcome
            if args.verbose:
                print(_describe(outcome))
            if outcome.problems:
                problems.append(outcome)
                if args.keep:
                    _keep(args.keep, seed, case, conf,
                          material if args.polyglot else None)
        elapsed = time.monotonic() - started

    if slowest is None:
        print('no case ran')
        return 1
    print('%d cases in %.1f s (%.1f ms per case; slowest: case %d, %.2f s)'
          % (ran, elapsed, 1000 * elapsed / ran, slowest.case,
             slowest.elapsed))
    print('\noutcomes per seed:')
    for name in sorted(per_seed):
        counts = per_seed[name]
        print('  %-22s %s' % (name, ', '.join(
            '%s=%d' % item for item in sorted(counts.items()))))
    print('\noutcomes overall:')
    for code, count in overall.most_common():
        print('  %-28s %6d' % (code, count))
    print('\n%d cases broke a guarantee' % len(problems))
    for outcome in problems:
        print(_describe(outcome))
        for problem in outcome.problems:
            print('      ' + problem)
    return 1 if problems else 0


def _describe(outcome):
    return ('  case %d (%s, declared %s; %s): %s %s' % (
        outcome.case, outcome.seed, outcome.declared,
        '; '.join(outcome.mutations), outcome.code, outcome.message[:300]))


def _keep(directory, seed, case, conf, material=None):
    # run_case removed its image: rebuild it from the same case number.
    os.makedirs(directory, exist_ok=True)
    if material is not None:
        path, declared, _notes, name = fuzzer.make_polyglot_case(
            material, case, directory)
    else:
        path, declared, _notes = fuzzer.make_case(seed, case, directory,
                                                  fuzzer.declarable(conf))
        name = seed.name
    os.rename(path, os.path.join(directory, 'case-%d.%s.declared-%s'
                                 % (case, name, declared)))


if __name__ == '__main__':
    sys.exit(main())
