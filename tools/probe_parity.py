#!/usr/bin/env python3
"""Our refusals against qemu's own format guess, counted.

    .venv/bin/python tools/probe_parity.py [--polyglot N] [--fuzz N]
                                           [--first K] [--no-suite]
                                           [--keep DIR] [--verbose]

Runs every image of the test suite (testkit/hostileimages.suite_images,
declared as what it is meant to be and undeclared), N header-fuzzed
mutants (testkit/fuzzer.make_case, cases spread over the seeds) and N
polyglot mutants (testkit/fuzzer.make_polyglot_case) through the core
API and through the real ``qemu-img info`` without ``-f`` in a bubblewrap
sandbox (testkit/qemuprobe.py), and prints per group: cases, accepted,
refused or failed, cases where qemu guesses another format than the one
claimed, how many of those we refused, and disagreements (accepted
although qemu would guess another format), each listed with its case.
Cases are deterministic: ``--first K`` starts at case K. Exits 1 on any
disagreement, 2 when the sandbox cannot be built.
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
import logging
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from testkit import config  # noqa: E402
from testkit import fuzzer  # noqa: E402
from testkit import hostileimages  # noqa: E402
from testkit import qemuprobe  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--polyglot', type=int, default=300,
                        help='polyglot mutants (default 300)')
    parser.add_argument('--fuzz', type=int, default=140,
                        help='header-fuzzed mutants (default 140)')
    parser.add_argument('--first', type=int, default=0,
                        help='number of the first mutant (default 0)')
    parser.add_argument('--no-suite', action='store_true',
                        help='skip the suite\'s own images')
    parser.add_argument('--keep', metavar='DIR',
                        help='copy every disagreeing image here')
    parser.add_argument('--verbose', action='store_true',
                        help='print every case')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    try:
        sandbox = qemuprobe.QemuProbe()
    except qemuprobe.SandboxUnavailable as err:
        print('no sandbox for qemu-img: %s' % err)
        return 2

    with tempfile.TemporaryDirectory(prefix='qimg-parity-') as tmp:
        conf = config.make_conf(os.path.join(tmp, 'workspace'))
        groups = []
        started = time.monotonic()
        if not args.no_suite:
            groups.append(('suite images', _suite(sandbox, conf, tmp, args)))
        if args.fuzz:
            groups.append(('header mutants', _fuzzed(sandbox, conf, tmp,
                                                     args)))
        if args.polyglot:
            groups.append(('polyglot mutants', _polyglots(sandbox, conf,
                                                          tmp, args)))
        elapsed = time.monotonic() - started

    everything = [c for _name, group in groups for c in group]
    print('%d cases in %.1f s (%.1f ms per case, qemu-img in bwrap '
          'included)\n' % (len(everything), elapsed,
                           1000 * elapsed / max(len(everything), 1)))
    for name, group in groups + [('all', everything)]:
        print(name)
        for what, count in qemuprobe.summarise(group).items():
            print('  %-30s %6d' % (what, count))
    disagreements = [c for c in everything if c.disagrees]
    for c in disagreements:
        print('DISAGREEMENT %s (declared %s): accepted as %s, qemu guesses '
              '%s' % (c.name, c.declared, c.accepted_as, c.qemu.driver))
    return 1 if disagreements else 0


def _run(sandbox, conf, name, path, declared, args):
    comparison = qemuprobe.compare(sandbox, name, path, declared, conf)
    if args.verbose:
        print('  %-60s declared %-6s %-26s qemu %s' % (
            name, declared, comparison.accepted_as or comparison.code,
            comparison.qemu.driver))
    if comparison.disagrees and args.keep:
        os.makedirs(args.keep, exist_ok=True)
        shutil.copyfile(path, os.path.join(
            args.keep, name.replace('/', '_').replace(' ', '_')))
    return comparison


def _suite(sandbox, conf, tmp, args):
    directory = os.path.join(tmp, 'suite')
    os.makedirs(directory)
    found = []
    for name, path, meant in hostileimages.suite_images(directory):
        for declared in sorted({meant, None}, key=str):
            found.append(_run(sandbox, conf, name, path, declared, args))
    return found


def _fuzzed(sandbox, conf, tmp, args):
    directory = os.path.join(tmp, 'fuzz')
    os.makedirs(os.path.join(directory, 'seeds'))
    seeds = fuzzer.build_seeds(os.path.join(directory, 'seeds'))
    formats = fuzzer.declarable(conf)
    found = []
    for case in range(args.first, args.first + args.fuzz):
        seed = seeds[case % len(seeds)]
        path, declared, _notes = fuzzer.make_case(seed, case, directory,
                                                  formats)
        found.append(_run(sandbox, conf, '%s case %d' % (seed.name, case),
                          path, declared, args))
        os.unlink(path)
    return found


def _polyglots(sandbox, conf, tmp, args):
    directory = os.path.join(tmp, 'polyglot')
    material = fuzzer.build_polyglot_material(os.path.join(directory,
                                                           'material'))
    found = []
    for case in range(args.first, args.first + args.polyglot):
        path, declared, _notes, label = fuzzer.make_polyglot_case(
            material, case, directory)
        found.append(_run(sandbox, conf, 'polyglot %d %s' % (case, label),
                          path, declared, args))
        os.unlink(path)
    return found


if __name__ == '__main__':
    sys.exit(main())
