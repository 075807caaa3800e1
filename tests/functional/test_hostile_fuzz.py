"""Fuzz the header checks with mutated real images (issue 3).

One small valid image of every format is built once; each case flips
bits, overwrites fields with boundary values, splices in another format's
magic, rewrites VMDK descriptor text or cuts the file (tests/fuzzer.py),
then inspects it. Every case must end with a result or a declared error
code, exit 0, 3 or 4, no traceback, no internal error, no refusal left to
qemu-img's answer (the header check should have made it), no process
left behind, an empty workspace, and an answer within a per-case alarm.

Most cases run through the core API in-process; a sample runs through the
real CLI. ``tools/fuzz.py`` runs the same cases at any count.
"""

import collections
import json
import logging
import time

import pytest

from qimgintrospect import exception
from qimgintrospect import opts
from testkit import config
from testkit import fuzzer

# Cases per seed image; 14 seeds. Case numbers differ from the CLI
# sample's so that the two runs cover different mutations.
API_CASES_PER_SEED = 150
CLI_CASES = 20
CLI_FIRST_CASE = 1000000


@pytest.fixture(scope='module')
def seeds(tmp_path_factory):
    return fuzzer.build_seeds(tmp_path_factory.mktemp('seeds'))


@pytest.mark.timeout(600)
def test_fuzzed_headers_through_the_core_api(conf, seeds, tmp_path, caplog):
    # Thousands of refusals are logged; keeping only errors keeps it fast.
    caplog.set_level(logging.ERROR)
    conf.set_override('timeout', 20, opts.QEMU_IMG_GROUP)
    workspace = conf[opts.WORKSPACE_GROUP].directory
    counts = collections.Counter()
    broken = []
    for case in range(API_CASES_PER_SEED * len(seeds)):
        seed = seeds[case % len(seeds)]
        outcome = fuzzer.run_case(seed, case, tmp_path, conf, workspace,
                                  time_limit=30)
        counts[outcome.code] += 1
        if outcome.problems:
            broken.append(outcome)
    assert broken == []
    # The mutations reach every stage: some images pass, some are refused
    # by the header check, some only fail in qemu-img.
    assert counts['ok'] > 0
    assert sum(n for code, n in counts.items()
               if exception.CODES.get(code, (0,))[0] == 3) > 0
    assert sum(n for code, n in counts.items()
               if exception.CODES.get(code, (0,))[0] == 4) > 0


@pytest.mark.timeout(600)
def test_fuzzed_headers_through_the_cli(cli, conf, seeds, tmp_path):
    cli.set(opts.QEMU_IMG_GROUP, 'timeout', 20)
    # The CLI runs with the default formats, as *conf* has them.
    formats = fuzzer.declarable(conf)
    broken = []
    for case in range(CLI_FIRST_CASE, CLI_FIRST_CASE + CLI_CASES):
        seed = seeds[case % len(seeds)]
        path, declared, notes = fuzzer.make_case(seed, case, tmp_path,
                                                 formats)
        args = ('--disk-format', declared) if declared else ()
        since = time.time()
        proc = cli.run('inspect', path, '-f', 'json', *args, timeout=60)
        problems = []
        if 'Traceback' in proc.stderr:
            problems.append('traceback: %s' % proc.stderr[-2000:])
        try:
            out = json.loads(proc.stdout)
        except ValueError:
            problems.append('stdout is not JSON: %r' % proc.stdout[:500])
            out = {}
        if proc.returncode == 0:
            if 'properties' not in out:
                problems.append('exit 0 without properties: %r' % out)
            code, message = 'ok', ''
        else:
            error = out.get('error') or {}
            code, message = error.get('code'), error.get('message', '')
            if exception.CODES.get(code, (None,))[0] != proc.returncode:
                problems.append('exit %d with code %r'
                                % (proc.returncode, code))
        problems += fuzzer.check_outcome(proc.returncode, code, message)
        left = fuzzer.leftover_processes(cli.workspace, since)
        if left:
            problems.append('processes left behind: %s' % left)
        leftovers = config.workspace_leftovers(cli.workspace)
        if leftovers:
            problems.append('workspace not empty: %s' % leftovers)
        if problems:
            broken.append((case, seed.name, declared, notes, problems))
    assert broken == []
