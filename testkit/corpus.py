"""Every kind of image the suite inspects, in one directory, for comparisons.

The differential tests of ranged reads (tests/functional/test_remote_*.py)
run each image of the corpus through two paths (a local file and the same
file on a web server; Glance read by ranges and downloaded) and compare the
outcomes. :func:`build` makes, with the real qemu-img and the builders of
:mod:`testkit.imagebuilder`, :mod:`testkit.hostileimages` and
:mod:`testkit.fuzzer`:

* the format images of the CLI tests: every format Glance takes, VMDK
  subformats and adapters, partitioned raws, an ISO, a qcow2 with data;
* the hostile images of the hostile tests, refused or failing at every
  stage: header checks, qemu-img, its caps;
* mutated images from the fuzzer's seeds, some accepted, some refused.

Each :class:`Sample` says how the image is declared, and whether it is
*small* (a few MiB at most: cheap to upload to Glance). :func:`comparable`
is what must be the same both ways.
"""

import collections
import os
import shutil

from qimgintrospect import exception
from qimgintrospect.remote import source as remote_source
from testkit import fuzzer
from testkit import hostileimages as hostile
from testkit import imagebuilder

MiB = imagebuilder.MiB
SIZE = 16 * MiB
#: Fuzzed cases per seed (14 seeds).
FUZZED_PER_SEED = 3
#: Case numbers apart from those of the fuzz tests.
FIRST_FUZZED_CASE = 2000000

#: One image: its file name in the corpus directory, its path, the
#: format it is declared as (None: detected) and whether it is small.
Sample = collections.namedtuple('Sample', ['name', 'path', 'declared',
                                           'small'])

#: What qemu-img says about a local file only: its allocation.
LOCAL_FILE_FACTS = ('actual_size',)


def comparable(outcome):
    """What must be the same both ways: the error, or the answer.

    The error's category and code; or the properties, the details but
    how the image was read (:data:`remote_source.DETAILS`) and
    :data:`LOCAL_FILE_FACTS`, and the warnings. Through an NBD export
    qemu-img gives no dirty flag for a raw image (it reads that flag,
    always false, from the file layer, which NBD does not have): it
    counts as false.
    """
    if isinstance(outcome, exception.IntrospectionError):
        return type(outcome).__name__, outcome.code
    details = dict(outcome.details)
    for name in remote_source.DETAILS + LOCAL_FILE_FACTS:
        details.pop(name, None)
    if outcome.details.get('read_by') == remote_source.RANGES and (
            outcome.properties.get('disk_format') in ('raw', 'iso')):
        details.setdefault('dirty_flag', False)
    return outcome.properties, details, outcome.warnings


def build(directory, fuzzed_per_seed=FUZZED_PER_SEED):
    """Make the corpus in *directory* (which must be empty).

    :returns: list of :class:`Sample`, names unique.
    """
    d = str(directory)
    samples = []

    def add(path, declared, small=True):
        samples.append(Sample(os.path.basename(path), path, declared,
                              small))

    def create(name, disk_format, options=None, size=SIZE):
        return imagebuilder.create(d, name, disk_format, size, options)

    # Formats.
    add(create('plain.raw', 'raw'), 'raw')
    add(create('v2.qcow2', 'qcow2', {'compat': '0.10'}), 'qcow2')
    add(create('big-clusters.qcow2', 'qcow2',
               {'compat': '1.1', 'cluster_size': '2M'}), 'qcow2')
    data = imagebuilder.sparse_raw(d, 'data.tmp', 64 * MiB, 4 * MiB)
    imagebuilder.qemu_img('convert', '-f', 'raw', '-O', 'qcow2', data,
                          os.path.join(d, 'data.qcow2'))
    os.unlink(data)
    add(os.path.join(d, 'data.qcow2'), None)
    add(create('image.vhdx', 'vhdx'), 'vhdx')
    add(create('image.vdi', 'vdi'), None)
    add(create('dynamic.vhd', 'vhd', {'subformat': 'dynamic'}), 'vhd')
    add(create('fixed.vhd', 'vhd', {'subformat': 'fixed'}), 'vpc')
    add(imagebuilder.iso(d, 'image.iso'), 'iso')
    add(imagebuilder.partitioned_raw(d, 'gpt.raw', SIZE, 'gpt'), 'raw')
    add(imagebuilder.partitioned_raw(d, 'dos.raw', SIZE, 'dos'), None)
    for subformat in ('monolithicSparse', 'streamOptimized'):
        for adapter in ('ide', 'buslogic', 'lsilogic', 'legacyESX'):
            add(imagebuilder.vmdk(d, '%s-%s.vmdk' % (subformat, adapter),
                                  subformat, adapter, SIZE), 'vmdk')
    add(imagebuilder.vmdk(d, 'flat.vmdk', 'monolithicFlat', 'lsilogic',
                          MiB), 'vmdk')
    for disk_format in ('qed', 'luks', 'ploop'):
        add(create('image.' + disk_format, disk_format,
                   {'iter-time': 10} if disk_format == 'luks' else None,
                   MiB), None)
    add(create('qcow2-as-raw.qcow2', 'qcow2', size=MiB), 'raw')
    add(hostile.raw_file(d, 'random.bin', MiB, os.urandom(MiB)), 'qcow2')
    add(hostile.raw_file(d, 'random-detected.bin', MiB, os.urandom(MiB)),
        None)
    add(hostile.raw_file(d, 'empty.raw', 0), 'raw')

    # Hostile: refused by the header checks.
    canary = hostile.raw_file(d, 'canary.tmp')
    add(hostile.qcow2_backed_by(d, 'backed.qcow2', canary), 'qcow2')
    add(hostile.qcow2_backed_by(d, 'backed-nbd.qcow2',
                                'nbd://127.0.0.1:9/export'), None)
    add(hostile.qcow2_with_data_file(d, 'data-file.qcow2', canary), 'qcow2')
    pushed = hostile.qcow2_with_data_file(d, 'data-file-pushed.qcow2',
                                          canary, raw=True)
    hostile.qcow2_push_extensions(pushed)
    add(pushed, None)
    features = hostile.qcow2(d, 'features.qcow2')
    hostile.patch(features, 72, '>Q', 1 << 40)
    add(features, 'qcow2')
    version = hostile.qcow2(d, 'version.qcow2')
    hostile.patch(version, 4, '>I', 4)
    add(version, None)
    add(hostile.vmdk_descriptor_file(
        d, 'descriptor.vmdk', ['RW 2048 FLAT "canary.tmp" 0']), 'vmdk')
    add(hostile.vmdk_sparse(d, 'two-extents.vmdk', hostile.sparse_descriptor(
        ['RW 2048 SPARSE "two-extents.vmdk"',
         'RW 2048 FLAT "canary.tmp" 0'])), 'vmdk')
    add(hostile.vmdk_sparse(d, 'parent.vmdk', hostile.sparse_descriptor(
        ['RW 2048 SPARSE "parent.vmdk"'],
        extra='parentFileNameHint="canary.tmp"\n')), None)
    add(hostile.vhd_differencing(d, 'differencing.vhd', canary), 'vhd')
    hidden = hostile.qcow2_backed_by(d, 'hidden.tmp', canary)
    add(hostile.iso_with_header_of(d, 'hybrid.iso', hidden), 'iso')
    os.unlink(hidden)
    add(hostile.qcow2(d, 'huge.qcow2', size=5 * 1024 ** 4), 'qcow2')
    cut = hostile.qcow2(d, 'cut-table.qcow2')
    os.truncate(cut, 4096)
    add(cut, 'qcow2')
    cut = create('cut-header.vhdx', 'vhdx', size=MiB)
    os.truncate(cut, 70 * 1024)
    add(cut, None)
    bits = hostile.qcow2(d, 'cluster-bits.qcow2')
    hostile.patch(bits, 20, '>I', 30)
    add(bits, 'qcow2')

    # Hostile: only qemu-img (or its caps) finds them.
    refcount = create('refcount.qcow2', 'qcow2', size=MiB)
    hostile.patch(refcount, 48, '>Q', 65536 + 8)
    add(refcount, 'qcow2')
    checksum = create('checksum.vhd', 'vhd', size=MiB)
    hostile.patch(checksum, 64, '>I', 0x12345678)
    add(checksum, 'vhd')
    random_data = hostile.raw_file(d, 'random.tmp', 4 * MiB,
                                   os.urandom(4 * MiB))
    imagebuilder.qemu_img('convert', '-f', 'raw', '-O', 'vpc', random_data,
                          os.path.join(d, 'cut-blocks.vhd'))
    os.unlink(random_data)
    cut = os.path.join(d, 'cut-blocks.vhd')
    os.truncate(cut, os.path.getsize(cut) - MiB)
    add(cut, None)
    # A 2 GiB block map in a sparse file: past qemu-img's memory cap.
    add(hostile.vdi_with_block_map(d, 'table.vdi', 0x1fffff80), None,
        small=False)
    os.unlink(canary)

    # Mutations of every format's seed.
    seeds_dir = os.path.join(d, 'seeds.tmp')
    os.mkdir(seeds_dir)
    formats = {'raw', 'qcow2', 'vmdk', 'vhd', 'vhdx', 'vdi', 'iso', 'qed',
               'ploop'}
    case = FIRST_FUZZED_CASE
    for seed in fuzzer.build_seeds(seeds_dir):
        for _ in range(fuzzed_per_seed):
            path, declared, _notes = fuzzer.make_case(seed, case, d,
                                                      formats)
            renamed = os.path.join(d, 'fuzzed-%s-%d' % (seed.name, case))
            os.rename(path, renamed)
            add(renamed, declared, small=os.path.getsize(renamed) <= 4 * MiB)
            case += 1
    shutil.rmtree(seeds_dir)
    return samples
