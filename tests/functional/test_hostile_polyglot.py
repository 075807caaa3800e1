"""Images that are two formats at once (issue 9), made real.

A raw disk whose MBR boot code holds a VMDK descriptor is a fine raw disk
and, to qemu guessing the format, a VMDK that reads the files it names.
qimgintrospect never lets qemu guess (the format is forced), but Glance's
consumers may: every image here is refused when qemu's own probe would
pick another format than the one checked, and the refusal names that
format and where its magic sits. The positive controls run qemu-img
without ``-f``, as such a consumer would, and show the canary open.
"""

import os
import struct

import pytest

from qimgintrospect import api
from qimgintrospect import diskformats
from qimgintrospect import exception
from qimgintrospect import opts
from testkit import hostileimages as hostile
from testkit import imagebuilder
from testkit import qemuprobe
from tests import canary
from tests.functional.test_hostile import api_refused
from tests.functional.test_hostile import inspected
from tests.functional.test_hostile import refused

MiB = imagebuilder.MiB
# qemu driver -> Glance format.
_GLANCE = {driver: name for name, driver in diskformats.QEMU_DRIVERS.items()
           if driver != 'raw'}


def qemu_guesses(path):
    """The format an unguarded ``qemu-img info`` without -f opens.

    qemu's trace names it even when the open then fails.
    """
    proc = hostile.qemu_img(*qemuprobe.TRACE_ARGS + ('info', path))
    driver = qemuprobe.traced_driver(proc.stderr, path)
    assert driver, proc.stderr
    return driver


@pytest.fixture(scope='module')
def headers(tmp_path_factory):
    """{name: (qemu driver, first bytes)} of every format qemu probes."""
    return hostile.format_headers(tmp_path_factory.mktemp('headers'))


# A VMDK descriptor where a raw disk keeps its boot code ---------------------

@pytest.mark.parametrize('style', ['plain', 'header', 'crlf', 'blank', 'nul',
                                   'spacing'])
@pytest.mark.parametrize('label', ['dos', 'gpt'])
def test_vmdk_descriptor_in_mbr_boot_code(cli, conf, images, style, label):
    target = hostile.raw_file(images, 'canary.raw', MiB)
    descriptor = hostile.vmdk_text(target, style)
    image = hostile.raw_with_boot_code(images, 'disk.raw', descriptor,
                                       label=label)
    with canary.FileCanary(target) as watch:
        message = refused(cli, image, '--disk-format', 'raw',
                          code='format-mismatch')
        assert 'would open it as vmdk' in message
        assert 'VMDK text descriptor' in message and 'byte ' in message
        # Not declared: the file is raw to our inspectors and a VMDK to
        # qemu's probe, two formats at once.
        assert 'vmdk' in api_refused(conf, image, code='format-ambiguous')
        assert watch.opened() == []
        # Positive control: qemu guessing the format reads the extent.
        assert qemu_guesses(image) == 'vmdk'
        assert watch.opened()


def test_vmdk_descriptor_in_iso_system_area(cli, conf, images):
    target = hostile.raw_file(images, 'canary.raw', MiB)
    image = hostile.iso_with_system_area(images, 'disk.iso',
                                         hostile.vmdk_text(target))
    with canary.FileCanary(target) as watch:
        message = refused(cli, image, '--disk-format', 'iso',
                          code='format-ambiguous')
        assert message.startswith('the file is iso, but qemu')
        assert "'version=1' at byte 0" in message
        assert api_refused(conf, image, code='format-ambiguous') == message
        assert watch.opened() == []
        assert qemu_guesses(image) == 'vmdk'
        assert watch.opened()


def test_vmdk_sparse_header_in_mbr_boot_code(cli, images):
    # The 79-byte sparse header fits in the boot code; capacity 0 sends
    # qemu to the descriptor at sector 1 (the MBR gap) and its extent.
    target = hostile.raw_file(images, 'canary.raw', MiB)
    sparse = hostile.vmdk_sparse(
        images, 'sparse.vmdk',
        hostile.sparse_descriptor(['RW 2048 FLAT "%s" 0' % target],
                                  create_type='monolithicFlat'),
        capacity=0)
    with open(sparse, 'rb') as f:
        header, descriptor = f.read(hostile.BOOT_CODE), f.read()
    image = hostile.raw_with_boot_code(images, 'disk.raw', header)
    imagebuilder.write_data(image, hostile.SECTOR,
                            descriptor[hostile.SECTOR - hostile.BOOT_CODE:
                                       20 * hostile.SECTOR])
    with canary.FileCanary(target) as watch:
        message = refused(cli, image, '--disk-format', 'raw',
                          code='format-mismatch')
        assert message == 'declared raw but the header is vmdk'
        # Undeclared, it is the VMDK it is, and its redirect is named.
        message = refused(cli, image, code='vmdk-external-extent')
        assert repr(target) in message
        assert watch.opened() == []
        assert qemu_guesses(image) == 'vmdk'
        assert watch.opened()


def test_an_empty_line_before_version_is_raw_to_qemu(cli, images):
    image = hostile.raw_with_boot_code(
        images, 'disk.raw', hostile.vmdk_text(style='empty-line'))
    out = inspected(cli, image, '--disk-format', 'raw')
    assert out['properties']['disk_format'] == 'raw'
    assert qemu_guesses(image) == 'raw'


# Every format qemu probes, in every carrier ---------------------------------

CARRIERS = ['dos', 'gpt', 'iso']


def _carry(images, carrier, data, offset):
    if carrier == 'iso':
        return hostile.iso_with_system_area(images, 'carrier.iso', data,
                                            offset), 'iso'
    path = imagebuilder.partitioned_raw(images, 'carrier.raw', 2 * MiB,
                                        carrier)
    imagebuilder.write_data(path, offset,
                            data[:hostile.BOOT_CODE] if offset == 0 else data)
    return path, 'raw'


@pytest.mark.parametrize('carrier', CARRIERS)
def test_every_header_at_byte_0_is_refused_naming_it(conf, images, headers,
                                                     carrier):
    for name, (driver, data) in sorted(headers.items()):
        image, declared = _carry(images, carrier, data, 0)
        assert qemu_guesses(image) == driver, name
        with pytest.raises(exception.ImageRefused) as err:
            api.inspect(image, declared, conf)
        names = {driver, _GLANCE.get(driver, driver)}
        assert any(n in err.value.message for n in names), (
            name, err.value.message)
        # Undeclared, it is refused or found broken, or it is exactly what
        # qemu guesses.
        try:
            result = api.inspect(image, None, conf)
        except exception.IntrospectionError:
            continue
        assert result.properties['disk_format'] == _GLANCE.get(driver), name


@pytest.mark.parametrize('offset', [512, 2048])
@pytest.mark.parametrize('carrier', CARRIERS)
def test_headers_past_the_probe_window_leave_the_carrier(conf, images,
                                                         headers, carrier,
                                                         offset):
    # qemu probes the first 512 bytes only: there it still sees the
    # carrier, and so do we.
    for name, (_driver, data) in sorted(headers.items()):
        image, declared = _carry(images, carrier, data, offset)
        assert qemu_guesses(image) == 'raw', name
        result = api.inspect(image, declared, conf)
        assert result.properties['disk_format'] == declared, name


def test_tie_between_qcow2_and_vdi_is_ambiguous(cli, conf, images):
    # The qcow2 snapshot-table offset (byte 64) spells the VDI signature:
    # both probes score 100, and qemu picks vdi, which it registers later.
    image = hostile.qcow2(images, 'tie.qcow2')
    imagebuilder.write_data(image, 0x40, b'\x7f\x10\xda\xbe')
    message = refused(cli, image, '--disk-format', 'qcow2',
                      code='format-ambiguous')
    assert message.startswith('the file matches several formats at once: '
                              'qcow2, vdi')
    assert message.endswith('would open it as vdi (VDI signature at byte '
                            '0x40)')
    assert qemu_guesses(image) == 'vdi'


def test_tie_between_a_vmdk_descriptor_and_vdi(conf, images):
    # A VMDK text descriptor whose 65th byte starts the VDI signature: our
    # inspectors see a VDI only, qemu's probes both (score 100), and qemu
    # opens vdi: one checked format, and a second one qemu also sees.
    text = hostile.vmdk_text(style='plain')[:0x40]
    image = hostile.raw_with_boot_code(images, 'disk.raw',
                                       text + b'\x7f\x10\xda\xbe')
    assert api_refused(conf, image, 'raw', code='format-mismatch') == (
        'declared raw but the header is vdi')
    message = api_refused(conf, image, code='format-ambiguous')
    assert 'several that score 100: vdi' in message
    assert 'vmdk (VMDK text descriptor' in message
    assert qemu_guesses(image) == 'vdi'


def test_qcow2_version_1_is_qemus_qcow(cli, images):
    image = imagebuilder.create(images, 'old.qcow', 'qcow', MiB)
    message = refused(cli, image, '--disk-format', 'qcow2',
                      code='qcow2-version')
    assert 'qcow (version 1)' in message
    assert qemu_guesses(image) == 'qcow'


def test_luks_header_in_an_allowed_carrier(cli, images, headers):
    # Allowed or not, a LUKS header at byte 0 is what qemu opens.
    cli.set(opts.FORMATS_GROUP, 'allowed_formats', ['raw', 'luks'])
    _driver, data = headers['luks']
    image, _declared = _carry(images, 'dos', data, 0)
    message = refused(cli, image, '--disk-format', 'raw',
                      code='format-mismatch')
    assert 'luks' in message


def test_fixed_vhd_is_raw_to_qemu_and_accepted(cli, images):
    # A fixed VHD's only footer is at its end, where qemu's probe never
    # looks: qemu reads it as raw, which opens nothing else.
    image = imagebuilder.create(images, 'fixed.vhd', 'vhd', MiB,
                                {'subformat': 'fixed'})
    out = inspected(cli, image, '--disk-format', 'vhd')
    assert out['details']['vhd_subformat'] == 'fixed'
    assert qemu_guesses(image) == 'raw'


def test_raw_starting_with_a_lowercase_magic(cli, images):
    image = hostile.raw_file(images, 'disk.raw', MiB,
                             b'qfi\xfb' + struct.pack('>I', 3))
    out = inspected(cli, image, '--disk-format', 'raw')
    assert out['properties']['disk_format'] == 'raw'
    assert qemu_guesses(image) == 'raw'
    assert os.path.getsize(image) == MiB
