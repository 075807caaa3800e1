"""Differential test: our refusals against qemu's own format guess.

Where we decide what qemu would guess (qimgintrospect/inspectors/probe.py),
we ask qemu itself. Every image of the suite, header-fuzzed mutants and a
few hundred polyglot mutants (another format's header, descriptor or
magic written into an MBR's boot code, a GPT or an ISO system area, at
byte 0, 512 or 2048) go through the core API and through the real
``qemu-img info`` without ``-f`` in a bubblewrap sandbox
(testkit/qemuprobe.py: the image is the only file, no network). Whenever
qemu would guess another format than the one we accepted, the test fails
with the case attached. A sandbox that cannot be built is a skip, with
its reason.

``tools/probe_parity.py`` runs the same at any count and prints the
figures.
"""

import logging

import pytest

from qimgintrospect.inspectors import probe
from testkit import fuzzer
from testkit import hostileimages as hostile
from testkit import qemuprobe
from tests import canary

POLYGLOT_CASES = 300
# Header mutants: cases per fuzzer seed (14 seeds).
FUZZ_CASES_PER_SEED = 10


@pytest.fixture(scope='module')
def sandbox():
    try:
        return qemuprobe.QemuProbe()
    except qemuprobe.SandboxUnavailable as err:
        pytest.skip('no sandbox for qemu-img: %s' % err)


@pytest.fixture(scope='module')
def suite(tmp_path_factory):
    return hostile.suite_images(tmp_path_factory.mktemp('suite'))


def _assert_no_disagreement(comparisons):
    disagreements = [c for c in comparisons if c.disagrees]
    assert disagreements == [], '\n'.join(
        '%s declared %s: accepted as %s, qemu guesses %s'
        % (c.name, c.declared, c.accepted_as, c.qemu.driver)
        for c in disagreements)


def test_the_sandbox_shows_qemu_only_the_image(sandbox, images):
    # A VMDK descriptor naming a file next to the image: outside the
    # sandbox qemu-img guessing opens it (the positive control), inside
    # it finds nothing there.
    target = hostile.raw_file(images, 'canary.raw')
    image = hostile.raw_file(images, 'descriptor.vmdk', 4096,
                             hostile.vmdk_text(str(target)))
    with canary.FileCanary(target) as watch:
        guess = sandbox.guess(image)
        assert guess.driver == 'vmdk' and not guess.opened
        assert 'No such file' in guess.stderr
        assert watch.opened() == []
        hostile.qemu_img('info', image)
        assert watch.opened()


def test_the_probe_table_guesses_as_qemu(sandbox, suite, images):
    """Our table and qemu agree on every image's first bytes alone."""
    checked = 0
    for name, path, _meant in suite:
        with open(path, 'rb') as f:
            ours = probe.probe(f.read(probe.PROBE_WINDOW)).driver
        assert sandbox.guess(path).driver == ours, name
        checked += 1
    # Ties: every magic at byte 0 with the VDI signature at 0x40.
    for name, (_driver, data) in hostile.format_headers(images).items():
        buf = bytearray(data.ljust(0x44, b'\x00'))
        buf[0x40:0x44] = b'\x7f\x10\xda\xbe'
        path = hostile.raw_file(images, 'tie-' + name, 4096, bytes(buf))
        assert sandbox.guess(path).driver == probe.probe(bytes(buf)).driver, (
            name)
        checked += 1
    assert checked > 80


def test_suite_images(sandbox, suite, conf, caplog):
    caplog.set_level(logging.ERROR)
    comparisons = []
    for name, path, meant in suite:
        for declared in sorted({meant, None}, key=str):
            comparisons.append(qemuprobe.compare(sandbox, name, path,
                                                 declared, conf))
    _assert_no_disagreement(comparisons)
    counts = qemuprobe.summarise(comparisons)
    # The suite holds both kinds: images qemu reads as we do, accepted,
    # and images qemu reads as another format, all refused.
    assert counts['accepted'] > 20
    assert counts['qemu guesses another format'] > 20
    assert counts['of those, refused'] == counts[
        'qemu guesses another format']


@pytest.mark.timeout(900)
def test_header_mutants(sandbox, conf, tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    (tmp_path / 'seeds').mkdir()
    seeds = fuzzer.build_seeds(tmp_path / 'seeds')
    formats = fuzzer.declarable(conf)
    comparisons = []
    for case in range(FUZZ_CASES_PER_SEED * len(seeds)):
        seed = seeds[case % len(seeds)]
        path, declared, _notes = fuzzer.make_case(seed, case, tmp_path,
                                                  formats)
        comparisons.append(qemuprobe.compare(
            sandbox, '%s case %d' % (seed.name, case), path, declared, conf))
    _assert_no_disagreement(comparisons)
    assert qemuprobe.summarise(comparisons)['accepted'] > 0


@pytest.mark.timeout(900)
def test_polyglot_mutants(sandbox, conf, tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    material = fuzzer.build_polyglot_material(tmp_path / 'material')
    comparisons = []
    for case in range(POLYGLOT_CASES):
        path, declared, _notes, label = fuzzer.make_polyglot_case(
            material, case, tmp_path)
        comparisons.append(qemuprobe.compare(
            sandbox, 'polyglot %d (%s)' % (case, label), path, declared,
            conf))
    _assert_no_disagreement(comparisons)
    counts = qemuprobe.summarise(comparisons)
    assert counts['accepted'] > 0
    assert counts['qemu guesses another format'] > POLYGLOT_CASES // 4
