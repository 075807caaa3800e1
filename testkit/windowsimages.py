"""Windows guest images for the libguestfs tests, built without Windows.

What libguestfs's inspection reads of a Windows guest (a systemroot
holding ``System32/config/{SOFTWARE,SYSTEM}`` and ``System32/cmd.exe``) and
what this project reads (the registry's version, services and drivers;
cloudbase-init's configuration; the QEMU guest agent; ``hiberfil.sys``;
the boot loaders; a BitLocker volume), made on NTFS and FAT filesystems by
guestfish, with registry hives written by ``hivexregedit --merge`` into a
minimal hive and PE binaries built byte by byte (:mod:`testkit.winformats`).

One function per kind of guest returns a :class:`WindowsGuest` (its
parameters are the facts a probe must find); :data:`GUESTS` names the
guests the tests use; :func:`build` makes any of them in ONE guestfish run,
one drive each, and returns their paths.

Layouts are those Windows Setup makes: on BIOS, an MBR disk with an active
"System Reserved" NTFS partition (``bootmgr``, ``Boot/BCD``) before C:, and
boot code in the MBR; on UEFI, a GPT disk with an EFI system partition
(``EFI/Microsoft/Boot/bootmgfw.efi``, ``EFI/Boot/bootx64.efi``), a
Microsoft reserved partition and C:, and no boot code in the protective
MBR.
"""

import collections
import os
import shutil
import struct
import subprocess
import uuid

from testkit import guestimages
from testkit import imagebuilder
from testkit import winformats

MiB = 1024 * 1024
SECTOR = 512

_ESP_GUID = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B'
_MSR_GUID = 'E3C9E316-0B5C-4DB8-817D-F92DF00215AE'
_BASIC_DATA_GUID = 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7'

#: Start values of a Windows service (``Services\\<name>\\Start``).
BOOT_START, SYSTEM_START, AUTO_START, DEMAND_START, DISABLED = 0, 1, 2, 3, 4

#: virtio-win drivers: service -> (display name, load order group, the PCI
#: IDs of its devices: legacy then modern). From the drivers' INFs
#: (virtio-win/kvm-guest-drivers-windows viostor.inx, vioscsi.inx,
#: NetKVM/netkvm-base.txt).
VIRTIO_DRIVERS = collections.OrderedDict([
    ('viostor', ('Red Hat VirtIO SCSI controller', 'SCSI miniport',
                 ('VEN_1AF4&DEV_1001', 'VEN_1AF4&DEV_1042'))),
    ('vioscsi', ('Red Hat VirtIO SCSI pass-through controller',
                 'SCSI miniport',
                 ('VEN_1AF4&DEV_1004', 'VEN_1AF4&DEV_1048'))),
    ('netkvm', ('Red Hat VirtIO Ethernet Adapter', 'NDIS',
                ('VEN_1AF4&DEV_1000', 'VEN_1AF4&DEV_1041'))),
])
#: What the virtio-win installer leaves: storage drivers start at boot,
#: the network driver on demand (NDIS loads it when the device appears).
VIRTIO_AS_INSTALLED = collections.OrderedDict([
    ('viostor', BOOT_START), ('vioscsi', BOOT_START),
    ('netkvm', DEMAND_START)])

#: Windows' own storage drivers: service -> (display name, group). AHCI
#: (storahci, Windows 8+) and the IDE stack (a controller driver and
#: atapi, the channel driver). Which of them start at boot depends on
#: the controller Windows was installed on.
INBOX_STORAGE = collections.OrderedDict([
    ('storahci', ('Microsoft Standard SATA AHCI Driver', 'SCSI miniport')),
    ('intelide', ('Intel IDE Controller', 'System Bus Extender')),
    ('pciide', ('Standard IDE/ATA Controller', 'System Bus Extender')),
    ('atapi', ('IDE Channel', 'SCSI miniport')),
    ('LSI_SAS', ('LSI Adapter, SAS 3000 series', 'SCSI miniport')),
])
#: Emulated NICs with a driver in Windows' driver store: model -> (the
#: PCI id QEMU gives the device, the in-box INF bound to it).
INBOX_NICS = collections.OrderedDict([
    ('e1000e', ('VEN_8086&DEV_10D3', 'net1ic64.inf')),
    ('e1000', ('VEN_8086&DEV_100E', 'nete1g3e.inf')),
    ('rtl8139', ('VEN_10EC&DEV_8139', 'netrtl64.inf')),
])
#: Installed on a SATA (AHCI) controller: storahci starts at boot, the
#: IDE stack on demand.
ON_SATA = collections.OrderedDict([
    ('storahci', BOOT_START), ('intelide', DEMAND_START),
    ('atapi', DEMAND_START)])
#: Installed on an IDE controller.
ON_IDE = collections.OrderedDict([
    ('storahci', DEMAND_START), ('intelide', BOOT_START),
    ('atapi', BOOT_START)])
#: Installed on VMware's LSI SAS controller: neither AHCI nor IDE boots.
ON_LSI_SAS = collections.OrderedDict([
    ('storahci', DEMAND_START), ('intelide', DEMAND_START),
    ('atapi', DEMAND_START), ('LSI_SAS', BOOT_START)])

#: cloudbase-init installed without a ``username=`` line: its own default
#: (``Admin``, cloudbaseinit/conf/default.py) applies.
CLOUDBASE_DEFAULT_USER = object()
CLOUDBASE_INIT_DIR = 'Program Files/Cloudbase Solutions/Cloudbase-Init'
CLOUDBASE_INIT_CONF = CLOUDBASE_INIT_DIR + '/conf/cloudbase-init.conf'
QEMU_GA_DIR = 'Program Files/Qemu-ga'

#: Build number -> (product, DisplayVersion/ReleaseId). Client builds are
#: Windows 10 up to 19045 and Windows 11 from 22000; the servers are
#: 14393 (2016), 17763 (2019), 20348 (2022), 26100 (2025).
CLIENT_BUILDS = {10240: ('Windows 10', '1507'), 19045: ('Windows 10', '22H2'),
                 22000: ('Windows 11', '21H2'), 22621: ('Windows 11', '22H2'),
                 22631: ('Windows 11', '23H2'), 26100: ('Windows 11', '24H2')}
SERVER_BUILDS = {14393: ('Windows Server 2016', '1607'),
                 17763: ('Windows Server 2019', '1809'),
                 20348: ('Windows Server 2022', '21H2'),
                 26100: ('Windows Server 2025', '24H2')}
_EDITION_NAMES = {'Professional': 'Pro', 'Enterprise': 'Enterprise',
                  'Education': 'Education', 'Core': 'Home',
                  'ServerDatacenter': 'Datacenter',
                  'ServerStandard': 'Standard',
                  'ServerDatacenterCor': 'Datacenter',
                  'ServerStandardCor': 'Standard'}

#: What one Windows guest is.
#:
#: ``product``: the product it really is ("Windows 11", "Windows Server
#: 2022"); ``product_name``: the registry's ProductName (Windows 11 keeps
#: "Windows 10 Pro"); ``build``: CurrentBuildNumber; ``installation_type``:
#: InstallationType ("Client", "Server", "Server Core"); ``edition_id``:
#: EditionID; ``display_version``; ``firmware``: "bios" (MBR, boot code,
#: System Reserved) or "uefi" (GPT, ESP, MSR); ``loader_signer``: CN of
#: the test key the EFI loaders are signed with (None: unsigned);
#: ``drivers``: virtio-win service -> Start value (empty: none installed);
#: ``driver_files``: whether their .sys files are in System32/drivers;
#: ``guest_agent``: the QEMU guest agent (service QEMU-GA and its files);
#: ``cloudbase_init``: None (not installed), :data:`CLOUDBASE_DEFAULT_USER`
#: or the ``username=`` it is configured with; ``hiberfil``: None (no
#: hiberfil.sys), ``b''`` (a zeroed one: clean shutdown) or its 4-byte
#: signature; ``hiberboot``: HiberbootEnabled (Fast Startup), None: no
#: value; ``bitlocker``: C: is a BitLocker volume (no NTFS, no registry:
#: only the ESP or System Reserved partition is readable); ``hostname``;
#: ``disk_format``; ``machine``: cmd.exe's architecture;
#: ``inbox_storage``: Windows' own storage services -> Start value
#: (:data:`INBOX_STORAGE`); ``inbox_nics``: emulated NIC models whose
#: in-box driver the DriverDatabase binds (:data:`INBOX_NICS`).
WindowsGuest = collections.namedtuple('WindowsGuest', [
    'product', 'product_name', 'build', 'installation_type', 'edition_id',
    'display_version', 'firmware', 'loader_signer', 'drivers',
    'driver_files', 'guest_agent', 'cloudbase_init', 'hiberfil',
    'hiberboot', 'bitlocker', 'hostname', 'disk_format', 'machine',
    'inbox_storage', 'inbox_nics'])

TEST_SIGNER = winformats.TEST_SIGNER


def server(build=20348, edition_id='ServerDatacenter', core=False, **kw):
    """A Windows Server guest of *build* (14393, 17763, 20348, 26100)."""
    product, display = SERVER_BUILDS[build]
    fields = dict(
        product=product,
        product_name='%s %s' % (product, _EDITION_NAMES[edition_id]),
        build=build, edition_id=edition_id,
        installation_type='Server Core' if core else 'Server',
        display_version=display)
    return _guest(fields, kw)


def client(build=19045, edition_id='Professional', **kw):
    """A Windows 10 or 11 guest of *build*.

    Windows 11 calls itself "Windows 10" in ProductName: only the build
    number (22000 and later) tells them apart.
    """
    product, display = CLIENT_BUILDS[build]
    fields = dict(
        product=product,
        product_name='Windows 10 %s' % _EDITION_NAMES[edition_id],
        build=build, edition_id=edition_id, installation_type='Client',
        display_version=display)
    return _guest(fields, kw)


def _guest(fields, overrides):
    defaults = dict(firmware='bios', loader_signer=None, drivers={},
                    driver_files=True, guest_agent=False,
                    cloudbase_init=None, hiberfil=None, hiberboot=None,
                    bitlocker=False, hostname='WIN-TEST',
                    disk_format='qcow2', machine='x86_64',
                    inbox_storage=ON_IDE, inbox_nics=())
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise TypeError('unknown WindowsGuest fields: %s'
                        % ', '.join(sorted(unknown)))
    defaults.update(overrides)
    defaults.update(fields)
    defaults['drivers'] = collections.OrderedDict(defaults['drivers'])
    defaults['inbox_storage'] = collections.OrderedDict(
        defaults['inbox_storage'])
    defaults['inbox_nics'] = tuple(defaults['inbox_nics'])
    return WindowsGuest(**defaults)


def windows_server_2022(**kw):
    """Server 2022 on BIOS with virtio drivers, qemu-ga, cloudbase-init."""
    values = dict(drivers=VIRTIO_AS_INSTALLED, guest_agent=True,
                  cloudbase_init='cloudadmin', hiberfil=b'',
                  hiberboot=0, hostname='WS2022')
    values.update(kw)
    return server(20348, **values)


def windows_11(**kw):
    """Windows 11 23H2 on UEFI (signed loaders), no virtio drivers.

    Installed on a SATA controller; Windows' own e1000e driver.
    """
    values = dict(firmware='uefi', loader_signer=TEST_SIGNER,
                  hiberfil=b'', hiberboot=1, hostname='WIN11',
                  inbox_storage=ON_SATA, inbox_nics=('e1000e', 'e1000'))
    values.update(kw)
    return client(22631, **values)


def hibernated(signature=b'HIBR', **kw):
    """Windows 10 whose hiberfil.sys holds a hibernation (or other) image."""
    values = dict(hiberfil=signature, hiberboot=1, hostname='HIBERNATED',
                  drivers=VIRTIO_AS_INSTALLED)
    values.update(kw)
    return client(19045, **values)


def bitlocker(**kw):
    """Windows 11 whose C: is a BitLocker volume (only the ESP is clear)."""
    values = dict(bitlocker=True, hostname='LOCKED')
    values.update(kw)
    return windows_11(**values)


GUESTS = collections.OrderedDict([
    ('win2022', windows_server_2022()),
    ('win11', windows_11()),
    ('win-hibernated', hibernated()),
    ('win-bitlocker', bitlocker()),
    # The version table, cheaply: other builds, other facts.
    # Exported from VMware: installed on IDE, VMware's e1000.
    ('win2016', server(14393, edition_id='ServerStandard',
                       hostname='WS2016', disk_format='vmdk',
                       inbox_nics=('e1000',))),
    ('win2019', server(17763, drivers={'vioscsi': BOOT_START,
                                       'netkvm': DEMAND_START},
                       cloudbase_init=CLOUDBASE_DEFAULT_USER,
                       hostname='WS2019')),
    # virtio drivers staged but not started at boot, installed on
    # VMware's LSI SAS: no disk bus Nova offers boots it.
    ('win2025', server(26100, firmware='uefi', loader_signer=TEST_SIGNER,
                       drivers={'viostor': DEMAND_START,
                                'netkvm': DEMAND_START},
                       guest_agent=True, hostname='WS2025',
                       inbox_storage=ON_LSI_SAS)),
    ('win10', client(19045, edition_id='Enterprise', hiberfil=b'',
                     hiberboot=1, hostname='WIN10', disk_format='vmdk',
                     inbox_storage=ON_SATA,
                     inbox_nics=('e1000e', 'e1000'))),
])


def build(directory, names=None):
    """Build the guests *names* (default all of :data:`GUESTS`).

    :param names: names in :data:`GUESTS`, or a dict name ->
        :class:`WindowsGuest` for guests made by the functions above.
    :returns: dict name -> path of the image in its ``disk_format``.
    """
    if names is None:
        guests = GUESTS
    elif isinstance(names, dict):
        guests = collections.OrderedDict(names)
    else:
        guests = collections.OrderedDict((n, GUESTS[n]) for n in names)
    directory = str(directory)
    work = os.path.join(directory, 'windows-build')
    os.makedirs(work, exist_ok=True)
    layouts = collections.OrderedDict(
        (name, _Layout(guest)) for name, guest in guests.items())
    # Partitioned on the host: each partitioning call in the appliance
    # costs more than a second under emulation, sfdisk nothing.
    args = ['guestfish', '--format=raw']
    script = ['run']
    for index, (name, layout) in enumerate(layouts.items()):
        layout.raw = os.path.join(work, name + '.raw')
        layout.partition()
        args += ['-a', layout.raw]
        device = '/dev/sd' + chr(ord('a') + index)
        files = os.path.join(work, name + '.files')
        os.makedirs(files, exist_ok=True)
        script += _GuestScript(name, guests[name], layout, device,
                               files).lines()
    script_path = os.path.join(work, 'build.guestfish')
    with open(script_path, 'w') as f:
        f.write('\n'.join(script) + '\n')
    subprocess.run(args + ['-f', script_path], check=True,
                   capture_output=True, env=guestimages.environment(),
                   timeout=900)
    paths = {}
    for name, layout in layouts.items():
        layout.finish()
        paths[name] = imagebuilder.from_raw(layout.raw, directory, name,
                                            guests[name].disk_format)
    shutil.rmtree(work, ignore_errors=True)
    return paths


class _Layout(object):
    """The partitions of one guest's disk, and its raw file."""

    def __init__(self, guest):
        self.guest = guest
        self.raw = None
        # A random MBR disk signature and GPT partition GUID per image:
        # Windows records them in MountedDevices to name C:.
        self.disk_signature = uuid.uuid4().bytes[:4]
        self.system_guid = uuid.uuid4()
        # (start, size) in sectors.
        if guest.firmware == 'uefi':
            self.size = 128 * MiB
            self.esp = (2048, 32 * MiB // SECTOR)
            self.msr = (sum(self.esp), 16 * MiB // SECTOR)
            self.system = (sum(self.msr),
                           self.size // SECTOR - 34 - sum(self.msr))
            self.system_partition = 3
        else:
            self.size = 112 * MiB
            self.reserved = (2048, 32 * MiB // SECTOR)
            self.system = (sum(self.reserved),
                           self.size // SECTOR - sum(self.reserved))
            self.system_partition = 2

    def partition(self):
        """Make the raw disk and its partition table (sfdisk, on the host)."""
        with open(self.raw, 'wb') as f:
            f.truncate(self.size)
        if self.guest.firmware == 'uefi':
            table = ['label: gpt',
                     'start=%d, size=%d, type=%s, name="EFI system partition"'
                     % (self.esp + (_ESP_GUID,)),
                     'start=%d, size=%d, type=%s, '
                     'name="Microsoft reserved partition"'
                     % (self.msr + (_MSR_GUID,)),
                     'start=%d, size=%d, type=%s, uuid=%s, '
                     'name="Basic data partition"'
                     % (self.system + (_BASIC_DATA_GUID, self.system_guid))]
        else:
            table = ['label: dos',
                     'label-id: 0x%08x' % struct.unpack(
                         '<I', self.disk_signature)[0],
                     'start=%d, size=%d, type=7, bootable' % self.reserved,
                     'start=%d, size=%d, type=7' % self.system]
        subprocess.run(['sfdisk', '--quiet', '--no-reread', '--no-tell-kernel',
                        self.raw], input='\n'.join(table) + '\n',
                       text=True, check=True, capture_output=True, timeout=60)

    def mounted_device(self):
        """The ``\\DosDevices\\C:`` value of SYSTEM\\MountedDevices."""
        if self.guest.firmware == 'uefi':
            return b'DMIO:ID:' + self.system_guid.bytes_le
        return self.disk_signature + struct.pack('<Q',
                                                 self.system[0] * SECTOR)

    def finish(self):
        """Write what no tool writes: MBR boot code, BitLocker sectors."""
        with open(self.raw, 'r+b') as f:
            if self.guest.firmware == 'bios':
                f.seek(0)
                f.write(_mbr_boot_code())
            if self.guest.bitlocker:
                start, size = self.system
                for offset, data in winformats.bitlocker_volume(
                        size).items():
                    f.seek(start * SECTOR + offset)
                    f.write(data)


def _mbr_boot_code():
    """440 bytes of BIOS boot code: halt, and the messages an MBR prints.

    Not Microsoft's code; what matters to a reader of the disk is that the
    bootstrap area is not empty, as it is in a GPT protective MBR.
    """
    code = b'\xfa\xf4\xeb\xfd'  # cli; hlt; jmp back to hlt
    code += b'\0' * (0x163 - len(code))
    code += (b'Invalid partition table\0Error loading operating system\0'
             b'Missing operating system\0')
    return code + b'\0' * (440 - len(code))


class _GuestScript(object):
    """The guestfish commands that make one guest on *device*."""

    def __init__(self, name, guest, layout, device, files):
        self.name = name
        self.guest = guest
        self.layout = layout
        self.device = device
        self.files = files
        self._lines = []
        self._count = 0

    def lines(self):
        if self.guest.firmware == 'uefi':
            self._gpt()
        else:
            self._mbr()
        if not self.guest.bitlocker:
            self._windows()
        return self._lines

    def _add(self, *commands):
        self._lines.extend(commands)

    def _upload(self, data, guest_path):
        self._count += 1
        local = os.path.join(self.files, '%03d' % self._count)
        with open(local, 'wb') as f:
            f.write(data)
        self._add('upload %s "%s"' % (local, guest_path))

    def _mbr(self):
        d = self.device
        self._add('mkfs ntfs %s1 "label:System Reserved"' % d,
                  'mount %s1 /' % d)
        self._upload(winformats.pe_image(subsystem='native'), '/bootmgr')
        self._add('mkdir /Boot')
        self._upload(self._bcd(), '/Boot/BCD')
        self._add('umount-all')

    def _gpt(self):
        d = self.device
        self._add('mkfs vfat %s1' % d, 'mount %s1 /' % d,
                  'mkdir-p /EFI/Microsoft/Boot', 'mkdir-p /EFI/Boot')
        signer = self.guest.loader_signer
        self._upload(winformats.efi_loader(signer),
                     '/EFI/Microsoft/Boot/bootmgfw.efi')
        # The fallback path firmware boots when no NVRAM entry exists: a
        # copy of the boot manager, as Windows Setup leaves it.
        self._upload(winformats.efi_loader(signer), '/EFI/Boot/bootx64.efi')
        self._upload(self._bcd(), '/EFI/Microsoft/Boot/BCD')
        self._add('umount-all')

    def _bcd(self):
        path = os.path.join(self.files, 'BCD')
        return _hive_bytes(path, 'HKEY_LOCAL_MACHINE\\BCD00000000', {
            'Description': {'KeyName': 'BCD00000000', 'System': 1,
                            'TreatAsSystem': 1},
            'Objects': {},
        }, root_name='BCD00000000')

    def _windows(self):
        g, d = self.guest, self.device
        system = '%s%d' % (d, self.layout.system_partition)
        self._add('mkfs ntfs %s' % system, 'mount %s /' % system,
                  'mkdir-p /Windows/System32/config',
                  'mkdir-p /Windows/System32/drivers',
                  'mkdir-p "/Program Files"', 'mkdir-p /Users')
        self._upload(winformats.pe_image(machine=g.machine),
                     '/Windows/System32/cmd.exe')
        self._upload(_hive_bytes(os.path.join(self.files, 'SOFTWARE'),
                                 'HKEY_LOCAL_MACHINE\\SOFTWARE',
                                 software_keys(g)),
                     '/Windows/System32/config/SOFTWARE')
        self._upload(_hive_bytes(os.path.join(self.files, 'SYSTEM'),
                                 'HKEY_LOCAL_MACHINE\\SYSTEM',
                                 system_keys(g, self.layout)),
                     '/Windows/System32/config/SYSTEM')
        if g.driver_files:
            for service in list(g.drivers) + list(g.inbox_storage):
                self._upload(winformats.pe_image(machine=g.machine,
                                                 subsystem='native'),
                             '/Windows/System32/drivers/%s.sys' % service)
        if g.guest_agent:
            self._add('mkdir-p "/%s"' % QEMU_GA_DIR)
            self._upload(winformats.pe_image(machine=g.machine),
                         '/%s/qemu-ga.exe' % QEMU_GA_DIR)
        if g.cloudbase_init is not None:
            self._add('mkdir-p "/%s/conf"' % CLOUDBASE_INIT_DIR,
                      'mkdir-p "/%s/Python/Scripts"' % CLOUDBASE_INIT_DIR)
            self._upload(winformats.pe_image(machine=g.machine),
                         '/%s/Python/Scripts/cloudbase-init.exe'
                         % CLOUDBASE_INIT_DIR)
            self._upload(cloudbase_init_conf(g.cloudbase_init),
                         '/' + CLOUDBASE_INIT_CONF)
            self._upload(cloudbase_init_conf(g.cloudbase_init, unattend=True),
                         '/%s/conf/cloudbase-init-unattend.conf'
                         % CLOUDBASE_INIT_DIR)
        if g.hiberfil is not None:
            self._upload(winformats.hiberfil(g.hiberfil or None),
                         '/hiberfil.sys')
        self._add('umount-all')


def _hive_bytes(path, prefix, keys, root_name='ROOT'):
    winformats.write_hive(path, prefix, keys, root_name)
    with open(path, 'rb') as f:
        return f.read()


def software_keys(guest):
    """The SOFTWARE hive's keys for *guest* (see winformats.reg_text)."""
    current = collections.OrderedDict([
        ('ProductName', guest.product_name),
        ('EditionID', guest.edition_id),
        ('InstallationType', guest.installation_type),
        # Frozen at 6.3 since Windows 10; the real version is in the
        # Current{Major,Minor}VersionNumber DWORDs, which libguestfs reads.
        ('CurrentVersion', '6.3'),
        ('CurrentMajorVersionNumber', 10),
        ('CurrentMinorVersionNumber', 0),
        ('CurrentBuild', str(guest.build)),
        ('CurrentBuildNumber', str(guest.build)),
        ('UBR', 1000),
        ('ReleaseId', guest.display_version),
        ('DisplayVersion', guest.display_version),
        ('BuildLabEx', '%d.1.amd64fre.release.000000-0000' % guest.build),
        ('SystemRoot', 'C:\\Windows'),
        ('PathName', 'C:\\Windows'),
        ('RegisteredOwner', 'qimgintrospect'),
    ])
    keys = collections.OrderedDict([
        ('Microsoft\\Windows NT\\CurrentVersion', current),
        ('Microsoft\\Windows\\CurrentVersion', {
            'ProgramFilesDir': 'C:\\Program Files',
            'CommonFilesDir': 'C:\\Program Files\\Common Files'}),
    ])
    uninstall = 'Microsoft\\Windows\\CurrentVersion\\Uninstall\\'
    if guest.drivers:
        keys[uninstall + '{virtio-win-driver-installer}'] = {
            'DisplayName': 'Virtio-win-driver-installer',
            'DisplayVersion': '0.1.240', 'Publisher': 'Red Hat, Inc.'}
    if guest.guest_agent:
        keys[uninstall + '{qemu-guest-agent}'] = {
            'DisplayName': 'QEMU guest agent', 'DisplayVersion': '108.0.2',
            'Publisher': 'Red Hat',
            'InstallLocation': 'C:\\Program Files\\Qemu-ga\\'}
    if guest.cloudbase_init is not None:
        keys[uninstall + '{cloudbase-init}'] = {
            'DisplayName': 'Cloudbase-Init 1.1.4',
            'DisplayVersion': '1.1.4', 'Publisher': 'Cloudbase Solutions Srl',
            'InstallLocation':
                'C:\\Program Files\\Cloudbase Solutions\\Cloudbase-Init\\'}
        # Where cloudbase-init keeps which plugins ran, per instance.
        keys['Cloudbase Solutions\\Cloudbase-Init'] = {}
    return keys


def system_keys(guest, layout):
    """The SYSTEM hive's keys for *guest* (control set 001 is current)."""
    cs = 'ControlSet001'
    keys = collections.OrderedDict([
        ('Select', {'Current': 1, 'Default': 1, 'Failed': 0,
                    'LastKnownGood': 1}),
        ('MountedDevices', {'\\DosDevices\\C:': layout.mounted_device()}),
        (cs + '\\Control\\ComputerName\\ComputerName',
         {'ComputerName': guest.hostname}),
        (cs + '\\Services\\Tcpip\\Parameters',
         {'Hostname': guest.hostname, 'NV Hostname': guest.hostname}),
        (cs + '\\Control\\Session Manager\\Power',
         {} if guest.hiberboot is None
         else {'HiberbootEnabled': guest.hiberboot}),
    ])
    for service, start in guest.drivers.items():
        display, group, pci_ids = VIRTIO_DRIVERS[service]
        keys[cs + '\\Services\\' + service] = collections.OrderedDict([
            ('Type', 1),  # SERVICE_KERNEL_DRIVER
            ('Start', start),
            ('ErrorControl', 1),
            ('Group', group),
            ('ImagePath', winformats.expand_sz(
                '\\SystemRoot\\System32\\drivers\\%s.sys' % service)),
            ('DisplayName', display),
            ('Owners', winformats.multi_sz(['%s.inf' % service])),
        ])
        # Windows 8+ binds devices to drivers through the DriverDatabase
        # (older Windows: Control\CriticalDeviceDatabase).
        package = '%s.inf_amd64_0123456789abcdef' % service
        keys['DriverDatabase\\DriverInfFiles\\%s.inf' % service] = {
            '': winformats.multi_sz([package]), 'Active': package}
        for pci_id in pci_ids:
            keys['DriverDatabase\\DeviceIds\\PCI\\' + pci_id] = {
                '%s.inf' % service: b'\x01\xff\x00\x00'}
        keys['DriverDatabase\\DriverPackages\\%s\\Configurations\\%s_inst'
             % (package, service)] = {'Service': service, 'ConfigFlags': 0}
    for service, start in guest.inbox_storage.items():
        display, group = INBOX_STORAGE[service]
        keys[cs + '\\Services\\' + service] = collections.OrderedDict([
            ('Type', 1), ('Start', start), ('ErrorControl', 3),
            ('Group', group),
            ('ImagePath', winformats.expand_sz(
                'System32\\drivers\\%s.sys' % service)),
            ('DisplayName', display)])
    for model in guest.inbox_nics:
        pci_id, inf = INBOX_NICS[model]
        keys['DriverDatabase\\DeviceIds\\PCI\\' + pci_id] = {
            inf: b'\x01\xff\x00\x00'}
    if guest.guest_agent:
        keys[cs + '\\Services\\QEMU-GA'] = collections.OrderedDict([
            ('Type', 0x10),  # SERVICE_WIN32_OWN_PROCESS
            ('Start', AUTO_START),
            ('ErrorControl', 0),
            ('ImagePath', winformats.expand_sz(
                '"C:\\Program Files\\Qemu-ga\\qemu-ga.exe" -d --retry-path')),
            ('DisplayName', 'QEMU Guest Agent'),
            ('ObjectName', 'LocalSystem'),
        ])
    if guest.cloudbase_init is not None:
        program = 'C:\\Program Files\\Cloudbase Solutions\\Cloudbase-Init'
        keys[cs + '\\Services\\cloudbase-init'] = collections.OrderedDict([
            ('Type', 0x10),
            ('Start', AUTO_START),
            ('ErrorControl', 1),
            ('ImagePath', winformats.expand_sz(
                '"%s\\Python\\Scripts\\cloudbase-init.exe" --config-file '
                '"%s\\conf\\cloudbase-init.conf"' % (program, program))),
            ('DisplayName', 'Cloudbase-Init'),
            ('ObjectName', 'LocalSystem'),
        ])
    return keys


def cloudbase_init_conf(user, unattend=False):
    """A cloudbase-init.conf as its installer writes it (CRLF, [DEFAULT])."""
    program = 'C:\\Program Files\\Cloudbase Solutions\\Cloudbase-Init'
    lines = ['[DEFAULT]']
    if user is not CLOUDBASE_DEFAULT_USER:
        lines.append('username=%s' % user)
    lines += [
        'groups=Administrators',
        'inject_user_password=true',
        'config_drive_raw_hhd=true',
        'config_drive_cdrom=true',
        'config_drive_vfat=true',
        'bsdtar_path=%s\\bin\\bsdtar.exe' % program,
        'mtools_path=%s\\bin\\' % program,
        'verbose=true',
        'debug=true',
        'logdir=%s\\log\\' % program,
        'logfile=cloudbase-init%s.log' % ('-unattend' if unattend else ''),
        'default_log_levels=comtypes=INFO,suds=INFO,iso8601=WARN,'
        'requests=WARN',
        'local_scripts_path=%s\\LocalScripts\\' % program,
    ]
    if unattend:
        lines += ['metadata_services=cloudbaseinit.metadata.services.'
                  'base.EmptyMetadataService',
                  'plugins=cloudbaseinit.plugins.common.mtu.MTUPlugin,'
                  'cloudbaseinit.plugins.common.sethostname.'
                  'SetHostNamePlugin',
                  'allow_reboot=false', 'stop_service_on_exit=false']
    return ('\r\n'.join(lines) + '\r\n').encode('utf-8')
