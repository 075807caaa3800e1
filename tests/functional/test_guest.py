"""Guest OS detection with a real libguestfs appliance.

The guests are built once per session (tests/guestimages.py, one
guestfish run, no download). The module's main fixture makes ONE call to
the batch API, ``api.inspect_many``, over every guest of two owners, and
records every appliance launched; most tests assert on that one run.
The few others each need an appliance of their own (CLI, timeout, crash)
or none at all (libguestfs unusable).
"""

import os
import platform
import shutil
import signal
import sys

import psutil
import pytest

from qimgintrospect import api
from qimgintrospect import exception
from qimgintrospect.inspectors.guest import appliance
from qimgintrospect.inspectors.guest import session
from qimgintrospect import normalise
from qimgintrospect import opts
from testkit import config
from testkit import guestimages
from testkit import imagebuilder

pytest.importorskip('guestfs', reason='python3-guestfs is not installed')
if shutil.which('guestfish') is None:
    pytest.skip('libguestfs-tools is not installed', allow_module_level=True)

# Owner "tenant-b" first: its LVM clones need appliances of their own,
# the longest chain, so it starts while tenant-a's groups run.
OWNERS = (
    ('tenant-b', ('fedora-lvm', 'fedora-lvm-clone')),
    ('tenant-a', ('debian', 'debian-clone', 'ubuntu', 'rocky',
                  'alma-uefi', 'blank', 'backing-file')),
)
DRIVES_PER_APPLIANCE = 4
OS_GUESTS = [n for n, g in guestimages.GUESTS.items() if g.os_release]


def _guest_conf(directory, **guest_overrides):
    return config.make_conf(
        directory, guest=True,
        introspection_workspace={'max_workers': 2, 'slot_wait_timeout': 600},
        introspection_guest=dict(
            {'drives_per_appliance': DRIVES_PER_APPLIANCE},
            **guest_overrides))


def _qemu_children():
    return [p for p in psutil.Process().children(recursive=True)
            if p.name().startswith('qemu')]


@pytest.fixture(scope='session')
def guest_images(tmp_path_factory):
    """name -> path of every guest of tests/guestimages.py."""
    directory = tmp_path_factory.mktemp('guests')
    paths = guestimages.build(directory)
    base = imagebuilder.create(directory, 'base.raw', 'raw')
    # Refused by the header check: it never reaches an appliance.
    paths['backing-file'] = imagebuilder.create(
        directory, 'backing.qcow2', 'qcow2',
        options={'backing_file': base, 'backing_fmt': 'raw'})
    return paths


class BatchRun(object):
    """The one inspect_many() call of this module, and what it launched."""

    def __init__(self, guest_images, workspace):
        self.workspace = workspace
        self.requests = []
        self.names = []
        self.owner_of = {}
        for owner, names in OWNERS:
            for name in names:
                self.requests.append(api.ImageRequest(
                    guest_images[name], None, owner))
                self.names.append(name)
                self.owner_of[guest_images[name]] = owner
        self.name_of = {guest_images[n]: n for n in self.names}
        self.launches = []
        self.results = {}

    def run(self, conf):
        real_enter = appliance.Appliance.__enter__
        launches = self.launches

        def recording_enter(appliance):
            launches.append([self.name_of.get(i.label, i.label)
                             for i in appliance.images])
            return real_enter(appliance)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(appliance.Appliance, '__enter__', recording_enter)
            outcomes = api.inspect_many(self.requests, conf)
        self.results = dict(zip(self.names, outcomes))
        self.qemu_left = _qemu_children()

    def launches_with(self, name):
        return [launch for launch in self.launches if name in launch]


@pytest.fixture(scope='module')
def batch(guest_images, tmp_path_factory):
    workspace = tmp_path_factory.mktemp('guest-batch') / 'workspace'
    run = BatchRun(guest_images, workspace)
    run.run(_guest_conf(workspace))
    return run


def _expected(name):
    spec = guestimages.GUESTS[name]
    expected = {
        'os_type': 'linux',
        # The guests' os-release IDs are all Glance names already.
        'os_distro': spec.os_release['ID'],
        'os_version': spec.os_release['VERSION_ID'],
        # Their ELF binaries are this host's.
        'architecture': platform.machine(),
        'hw_firmware_type': 'uefi' if spec.uefi else 'bios',
    }
    if spec.admin_user:
        expected['os_admin_user'] = spec.admin_user
    if spec.guest_agent:
        expected['hw_qemu_guest_agent'] = 'yes'
    return expected


GUEST_PROPERTIES = ('os_type', 'os_distro', 'os_version', 'architecture',
                    'hw_firmware_type', 'os_admin_user',
                    'hw_qemu_guest_agent', 'vmware_ostype')


@pytest.mark.parametrize('name', OS_GUESTS)
def test_each_guest_gets_its_own_os_properties(batch, name):
    result = batch.results[name]
    assert not isinstance(result, exception.IntrospectionError), result
    found = {k: v for k, v in result.properties.items()
             if k in GUEST_PROPERTIES and k != 'vmware_ostype'}
    assert found == _expected(name)
    assert result.warnings == []
    assert result.properties['disk_format'] == (
        guestimages.GUESTS[name].disk_format)


def test_every_property_is_in_the_glance_vocabulary(batch):
    for name, result in batch.results.items():
        if isinstance(result, exception.IntrospectionError):
            continue
        assert normalise.validate(dict(result.properties), []) == (
            result.properties), name


def test_vmware_ostype_only_for_the_vmdk_guest(batch):
    for name in OS_GUESTS:
        properties = batch.results[name].properties
        if guestimages.GUESTS[name].disk_format == 'vmdk':
            # Rocky Linux 9 is a RHEL rebuild newer than VMware's list.
            assert properties['vmware_ostype'].startswith('rhel')
            assert properties['vmware_ostype'] in normalise.VMWARE_OSTYPES
        else:
            assert 'vmware_ostype' not in properties


def test_the_uefi_guest_names_its_loader(batch):
    details = batch.results['alma-uefi'].details
    assert details['guest_efi_loaders'] == ['/EFI/BOOT/BOOTX64.EFI']
    for name in OS_GUESTS:
        if not guestimages.GUESTS[name].uefi:
            assert 'guest_efi_loaders' not in batch.results[name].details


def test_a_blank_disk_has_no_os_properties_and_no_error(batch):
    result = batch.results['blank']
    assert not isinstance(result, exception.IntrospectionError), result
    assert not set(result.properties) & set(GUEST_PROPERTIES)
    assert result.properties['virtual_size'] > 0
    assert result.details['guest_roots'] == 0
    assert result.warnings == []


def test_clones_sharing_an_appliance_get_their_own_answers(batch,
                                                           guest_images):
    # The clone differs from its base only in one file's bytes: same ext4
    # UUID and label, so their fstabs resolve to either drive.
    with open(guest_images['debian'], 'rb') as a, \
            open(guest_images['debian-clone'], 'rb') as b:
        base, clone = a.read(), b.read()
    differing = sum(1 for x, y in zip(base, clone) if x != y)
    assert 0 < differing <= len(guestimages.GUESTS['debian-clone'].patch[0])
    assert ['debian', 'debian-clone'] == [
        n for n in batch.launches_with('debian-clone')[0]
        if n.startswith('debian')]
    # Answered in that shared appliance: neither was redone alone.
    assert len(batch.launches_with('debian')) == 1
    assert len(batch.launches_with('debian-clone')) == 1
    versions = {n: batch.results[n].properties['os_version']
                for n in ('debian', 'debian-clone')}
    assert versions == {n: guestimages.GUESTS[n].os_release['VERSION_ID']
                        for n in versions}
    # The second drive's root is named as in an appliance of its own.
    assert batch.results['debian-clone'].details['guest_root'] == (
        '/dev/sda1')


def test_entangled_lvm_clones_are_inspected_alone(batch):
    # Same PV UUID and VG name: LVM in a shared appliance would hide both.
    names = ('fedora-lvm', 'fedora-lvm-clone')
    assert sorted(names) in [sorted(launch) for launch in batch.launches]
    for name in names:
        assert [name] in batch.launches
        result = batch.results[name]
        assert result.properties['os_version'] == (
            guestimages.GUESTS[name].os_release['VERSION_ID'])
        assert result.details['guest_root'] == '/dev/vg0/root'


def test_owners_never_share_an_appliance(batch):
    assert batch.launches
    for launch in batch.launches:
        owners = {owner for owner, names in OWNERS
                  for name in launch if name in names}
        assert len(owners) == 1, launch
        assert len(launch) <= DRIVES_PER_APPLIANCE
    # Each owner's images did share appliances.
    assert max(len(launch) for launch in batch.launches) > 1


def test_a_refused_image_fails_alone(batch):
    error = batch.results['backing-file']
    assert isinstance(error, exception.IntrospectionError)
    assert error.code == exception.BACKING_FILE
    assert not batch.launches_with('backing-file')
    group = [n for owner, names in OWNERS if 'backing-file' in names
             for n in names]
    for name in group:
        if name != 'backing-file':
            assert not isinstance(batch.results[name],
                                  exception.IntrospectionError), name


def test_no_appliance_or_copy_outlives_the_batch(batch):
    assert batch.qemu_left == []
    assert config.workspace_leftovers(batch.workspace) == []


def test_cli_prints_os_properties(cli, guest_images):
    cli.set(opts.GUEST_GROUP, 'enabled', True)
    cli.set(opts.GUEST_GROUP, 'backend_settings',
            config.BACKEND_SETTINGS)
    code, output = cli.inspect_json(guest_images['alma-uefi'], timeout=600)
    assert code == 0, output
    properties = output['properties']
    assert {k: properties.get(k) for k in _expected('alma-uefi')} == (
        _expected('alma-uefi'))
    assert output['warnings'] == []


@pytest.mark.parametrize('how', ['bogus-backend', 'binding-missing'])
def test_libguestfs_unusable_keeps_format_properties_with_a_warning(
        how, guest_images, tmp_path, monkeypatch):
    if how == 'bogus-backend':
        conf = _guest_conf(tmp_path / 'workspace', backend='bogus')
    else:
        conf = _guest_conf(tmp_path / 'workspace')
        # A real ImportError from Python's import machinery.
        monkeypatch.setitem(sys.modules, 'guestfs', None)
        monkeypatch.setattr(appliance, '_binding', None)
    result = api.inspect(guest_images['ubuntu'], None, conf)
    assert result.properties['disk_format'] == 'qcow2'
    assert result.properties['virtual_size'] > 0
    assert not set(result.properties) & set(GUEST_PROPERTIES)
    assert len(result.warnings) == 1
    assert exception.GUEST_UNAVAILABLE in result.warnings[0]
    assert _qemu_children() == []


def test_libguestfs_unusable_can_be_an_error(guest_images, tmp_path):
    conf = _guest_conf(tmp_path / 'workspace', backend='bogus',
                       fail_if_unavailable=True)
    with pytest.raises(exception.IntrospectionError) as err:
        api.inspect(guest_images['ubuntu'], None, conf)
    assert err.value.code == exception.GUEST_UNAVAILABLE
    assert err.value.exit_code == exception.EXIT_FAILED
    assert config.workspace_leftovers(tmp_path / 'workspace') == []


def test_a_host_that_cannot_launch_is_remembered(guest_images, tmp_path,
                                                 monkeypatch):
    monkeypatch.setattr(session, '_host_failures', {})
    launches = []
    real_enter = appliance.Appliance.__enter__

    def recording_enter(appliance):
        launches.append(len(appliance.images))
        return real_enter(appliance)

    monkeypatch.setattr(appliance.Appliance, '__enter__', recording_enter)
    conf = _guest_conf(tmp_path / 'workspace', backend='bogus')
    first = api.inspect(guest_images['ubuntu'], None, conf)
    # The image's appliance, then one without any image: the host's fault.
    assert launches == [1, 0]
    second = api.inspect(guest_images['debian'], None, conf)
    assert launches == [1, 0]
    assert first.warnings == second.warnings


def test_an_inspection_past_its_timeout_is_killed(guest_images, tmp_path):
    # A real appliance that really takes longer than one second to
    # inspect a drive under emulation.
    conf = _guest_conf(tmp_path / 'workspace', inspect_timeout=1)
    with pytest.raises(exception.IntrospectionError) as err:
        api.inspect(guest_images['debian'], None, conf)
    assert err.value.code == exception.GUEST_TIMEOUT
    assert _qemu_children() == []
    assert config.workspace_leftovers(tmp_path / 'workspace') == []


def test_an_appliance_that_dies_is_its_own_error(guest_images, tmp_path,
                                                 monkeypatch):
    # The fault is real: the appliance's qemu is killed just before
    # inspect_os(), as a crash of qemu or of the appliance kernel would.
    real_call = appliance.Appliance.call

    def crashing_call(appliance, name, *args, **kwargs):
        if name == 'inspect_os':
            os.kill(appliance.handle.get_pid(), signal.SIGKILL)
        return real_call(appliance, name, *args, **kwargs)

    monkeypatch.setattr(appliance.Appliance, 'call', crashing_call)
    conf = _guest_conf(tmp_path / 'workspace')
    with pytest.raises(exception.IntrospectionError) as err:
        api.inspect(guest_images['debian'], None, conf)
    assert err.value.code == exception.GUEST_APPLIANCE_FAILED
    assert _qemu_children() == []
