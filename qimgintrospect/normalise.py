"""Glance's vocabulary, and the merge of raw findings into it.

The inspectors report raw findings in their own terms (qemu's ``vpc``, a
VMDK descriptor's ``buslogic``). :func:`merge` turns them into

* ``properties``: what Glance stores, spelled as Glance's metadefs and
  Nova spell it; every value is checked against :data:`VOCABULARY` and a
  value outside it is dropped with a warning, never emitted;
* ``details``: format facts that are not Glance properties (cluster size,
  qcow2 compat, dirty flag, actual size);
* ``warnings``: what a person should know but that did not stop anything.

:data:`VOCABULARY` mirrors Glance's ``etc/metadefs`` (a functional test
compares them, so a drift fails the build).
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

import collections
import re

from oslo_utils import units

from qimgintrospect import diskformats

#: VMDK createType (lower case) -> Glance/Nova vmware_disktype. Only the
#: hosted sparse types: a VMDK whose data is in other files (flat, vmfs:
#: Glance's "preallocated") is refused before it gets here.
VMWARE_DISKTYPES = {
    'streamoptimized': 'streamOptimized',
    'monolithicsparse': 'sparse',
}

#: VMDK ddb.adapterType (lower case) -> Glance/Nova vmware_adaptertype.
VMWARE_ADAPTERTYPES = {
    'lsilogic': 'lsiLogic',
    'buslogic': 'busLogic',
    'lsisas1068': 'lsiLogicsas',
    'lsilogicsas': 'lsiLogicsas',
    'pvscsi': 'paraVirtual',
    'paravirtual': 'paraVirtual',
    'ide': 'ide',
}

# Guest OS vocabulary (metadefs operating-system, compute-libvirt-image,
# compute-vmware; Glance's "useful image properties"; Nova's names).

#: os_distro: Glance's documented names plus the libosinfo names of
#: distributions Glance's list predates (rocky, almalinux, sles, ...).
OS_DISTROS = frozenset([
    'arch', 'centos', 'debian', 'fedora', 'freebsd', 'gentoo', 'mandrake',
    'mandriva', 'mes', 'msdos', 'netbsd', 'netware', 'openbsd',
    'opensolaris', 'opensuse', 'rhel', 'sled', 'ubuntu', 'windows',
    'rocky', 'almalinux', 'sles', 'alpinelinux', 'cirros',
])

#: libguestfs inspect_get_distro -> os_distro.
GUESTFS_DISTROS = {
    'alpinelinux': 'alpinelinux', 'archlinux': 'arch', 'centos': 'centos',
    'cirros': 'cirros', 'debian': 'debian', 'fedora': 'fedora',
    'freebsd': 'freebsd', 'gentoo': 'gentoo', 'mandriva': 'mandriva',
    'msdos': 'msdos', 'netbsd': 'netbsd', 'openbsd': 'openbsd',
    'opensuse': 'opensuse', 'rhel': 'rhel', 'rocky': 'rocky',
    'sles': 'sles', 'ubuntu': 'ubuntu', 'windows': 'windows',
}

#: os-release ID -> os_distro, for guests libguestfs only calls
#: "redhat-based", "suse-based" or "unknown" (AlmaLinux, for one, with
#: libguestfs 1.48), and to tell SLED from SLES.
OS_RELEASE_DISTROS = {
    'almalinux': 'almalinux', 'alpine': 'alpinelinux', 'arch': 'arch',
    'centos': 'centos', 'debian': 'debian', 'fedora': 'fedora',
    'freebsd': 'freebsd', 'gentoo': 'gentoo', 'opensuse': 'opensuse',
    'opensuse-leap': 'opensuse', 'opensuse-tumbleweed': 'opensuse',
    'rhel': 'rhel', 'rocky': 'rocky', 'sled': 'sled', 'sles': 'sles',
    'ubuntu': 'ubuntu',
}
_GENERIC_DISTROS = frozenset(['redhat-based', 'suse-based', 'unknown'])

#: architecture: Nova's names (nova.objects.fields.Architecture), which
#: Glance's metadefs point to.
ARCHITECTURES = frozenset([
    'alpha', 'armv6', 'armv7l', 'armv7b', 'aarch64', 'cris', 'i686', 'ia64',
    'lm32', 'm68k', 'microblaze', 'microblazeel', 'mips', 'mipsel',
    'mips64', 'mips64el', 'openrisc', 'parisc', 'parisc64', 'ppc', 'ppcle',
    'ppc64', 'ppc64le', 'ppcemb', 's390', 's390x', 'sh4', 'sh4eb', 'sparc',
    'sparc64', 'unicore32', 'x86_64', 'xtensa', 'xtensaeb',
])
#: Other spellings of an architecture (libguestfs, uname, dpkg) -> Nova's.
_ARCH_ALIASES = {'i386': 'i686', 'i486': 'i686', 'i586': 'i686',
                 'amd64': 'x86_64', 'arm64': 'aarch64', 'arm': 'armv7l',
                 'armhf': 'armv7l', 'ppc64el': 'ppc64le'}
_64BIT = frozenset(['x86_64', 'aarch64', 'ia64', 'mips64', 'mips64el',
                    'parisc64', 'ppc64', 'ppc64le', 's390x', 'sparc64'])

#: vmware_ostype: the enum of Glance's compute-vmware metadef.
VMWARE_OSTYPES = frozenset("""
    asianux3_64Guest asianux3Guest asianux4_64Guest asianux4Guest
    asianux5_64Guest asianux7_64Guest centos64Guest centosGuest
    centos6Guest centos6_64Guest centos7_64Guest coreos64Guest
    darwin10_64Guest darwin10Guest darwin11_64Guest darwin11Guest
    darwin12_64Guest darwin13_64Guest darwin14_64Guest darwin15_64Guest
    darwin16_64Guest darwin64Guest darwinGuest debian4_64Guest
    debian4Guest debian5_64Guest debian5Guest debian6_64Guest
    debian6Guest debian7_64Guest debian7Guest debian8_64Guest
    debian8Guest debian9_64Guest debian9Guest debian10_64Guest
    debian10Guest dosGuest eComStation2Guest eComStationGuest
    fedora64Guest fedoraGuest freebsd64Guest freebsdGuest
    genericLinuxGuest mandrakeGuest mandriva64Guest mandrivaGuest
    netware4Guest netware5Guest netware6Guest nld9Guest oesGuest
    openServer5Guest openServer6Guest opensuse64Guest opensuseGuest
    oracleLinux64Guest oracleLinuxGuest oracleLinux6Guest
    oracleLinux6_64Guest oracleLinux7_64Guest os2Guest
    other24xLinux64Guest other24xLinuxGuest other26xLinux64Guest
    other26xLinuxGuest other3xLinux64Guest other3xLinuxGuest otherGuest
    otherGuest64 otherLinux64Guest otherLinuxGuest redhatGuest
    rhel2Guest rhel3_64Guest rhel3Guest rhel4_64Guest rhel4Guest
    rhel5_64Guest rhel5Guest rhel6_64Guest rhel6Guest rhel7_64Guest
    rhel7Guest sjdsGuest sles10_64Guest sles10Guest sles11_64Guest
    sles11Guest sles12_64Guest sles12Guest sles64Guest slesGuest
    solaris10_64Guest solaris10Guest solaris11_64Guest solaris6Guest
    solaris7Guest solaris8Guest solaris9Guest turboLinux64Guest
    turboLinuxGuest ubuntu64Guest ubuntuGuest unixWare7Guest
    vmkernel5Guest vmkernel6Guest vmkernel65Guest vmkernelGuest
    vmwarePhoton64Guest win2000AdvServGuest win2000ProGuest
    win2000ServGuest win31Guest win95Guest win98Guest windows7_64Guest
    windows7Guest windows7Server64Guest windows8_64Guest windows8Guest
    windows8Server64Guest windows9_64Guest windows9Guest
    windows9Server64Guest windowsHyperVGuest winLonghorn64Guest
    winLonghornGuest winMeGuest winNetBusinessGuest
    winNetDatacenter64Guest winNetDatacenterGuest
    winNetEnterprise64Guest winNetEnterpriseGuest winNetStandard64Guest
    winNetStandardGuest winNetWebGuest winNTGuest winVista64Guest
    winVistaGuest winXPHomeGuest winXPPro64Guest winXPProGuest
""".split())

#: Linux distributions whose vmware_ostype names carry a major version:
#: distro -> (stem, versions VMware names). A newer release gets the
#: newest name of its family (what vSphere advises for releases it
#: predates); rocky and almalinux are RHEL rebuilds.
_VMWARE_VERSIONED = {
    'debian': ('debian', range(4, 11)),
    'rhel': ('rhel', range(2, 8)),
    'rocky': ('rhel', range(2, 8)),
    'almalinux': ('rhel', range(2, 8)),
    'centos': ('centos', range(6, 8)),
    'sles': ('sles', range(10, 13)),
    'sled': ('sles', range(10, 13)),
    'oraclelinux': ('oracleLinux', range(6, 8)),
}
#: Linux distributions with one unversioned vmware_ostype stem.
_VMWARE_FAMILIES = {
    'ubuntu': 'ubuntu', 'fedora': 'fedora', 'opensuse': 'opensuse',
    'mandriva': 'mandriva', 'coreos': 'coreos', 'centos': 'centos',
    'sles': 'sles', 'sled': 'sles', 'oraclelinux': 'oracleLinux',
}
#: Windows NT (major, minor) -> (client stem, server stem); the 64-bit
#: names follow from the stem.
_VMWARE_WINDOWS = {
    (5, 0): ('win2000Pro', 'win2000Serv'),
    (5, 1): ('winXPPro', 'winNetStandard'),
    (5, 2): ('winXPPro', 'winNetStandard'),
    (6, 0): ('winVista', 'winLonghorn'),
    (6, 1): ('windows7', 'windows7Server'),
    (6, 2): ('windows8', 'windows8Server'),
    (6, 3): ('windows8', 'windows8Server'),
    (10, 0): ('windows9', 'windows9Server'),
}

#: What a distributor's version or a user name may look like; anything
#: else read from a guest is not turned into a property.
_VERSION_RE = re.compile(r'^[0-9][0-9A-Za-z._-]{0,31}$')
_USER_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_.-]{0,31}$')

# Boot devices (metadefs compute-libvirt-image, compute-vtpm-hw; Nova's
# nova/objects/fields.py where Glance has no enum).

#: hw_disk_bus: Glance's enum (compute-libvirt-image), Nova's DiskBus.
DISK_BUSES = frozenset(['fdc', 'ide', 'sata', 'scsi', 'usb', 'virtio',
                        'xen', 'lxc', 'uml'])
#: hw_scsi_model: Nova's SCSIModel (Glance's metadef has no enum).
SCSI_MODELS = frozenset(['buslogic', 'ibmvscsi', 'lsilogic', 'lsisas1068',
                         'lsisas1078', 'virtio-scsi', 'vmpvscsi'])
#: hw_vif_model: Glance's enum (compute-libvirt-image).
VIF_MODELS = frozenset(['e1000', 'e1000e', 'ne2k_pci', 'netfront', 'pcnet',
                        'rtl8139', 'spapr-vlan', 'virtio', 'vmxnet3', 'igb'])
#: hw_machine_type is a free string for Glance and Nova; only the machine
#: types this project sets are allowed.
MACHINE_TYPES = frozenset(['pc', 'q35'])
#: os_secure_boot: not in Glance's metadefs (only in its "useful image
#: properties" page); Nova's SecureBoot enum (nova/objects/fields.py,
#: read by nova/virt/hardware.py get_secure_boot_constraint).
SECURE_BOOT = frozenset(['required', 'disabled', 'optional'])

#: Nova's default disk bus and NIC model on KVM; a guest ready for them
#: needs no property.
NOVA_DEFAULT_BUS = 'virtio'
NOVA_DEFAULT_VIF = 'virtio'
#: Emulated NIC models, best first, for a guest without a virtio driver.
_FALLBACK_VIFS = ('e1000e', 'e1000', 'rtl8139')

#: Windows products whose vendor requires a TPM 2.0 (Windows 11: "TPM
#: version 2.0", Microsoft's Windows 11 specifications; osinfo-db
#: win-11.xml).
_TPM2_PRODUCTS = frozenset(['Windows 11'])

Property = collections.namedtuple('Property', ['kind', 'allowed', 'core'])

#: Core image attributes Glance lets a user change on an active image,
#: whose value from the image is a floor: Glance's may be larger.
MINIMUMS = frozenset(['min_disk'])

#: Property -> (kind, allowed values or None, is it a core image attribute).
VOCABULARY = {
    'disk_format': Property(str, frozenset(diskformats.GLANCE_DISK_FORMATS),
                            True),
    'virtual_size': Property(int, None, True),
    'vmware_disktype': Property(
        str, frozenset(['streamOptimized', 'sparse', 'preallocated']), False),
    'vmware_adaptertype': Property(
        str, frozenset(['lsiLogic', 'lsiLogicsas', 'paraVirtual', 'busLogic',
                        'ide']), False),
    # Guest OS properties (inspectors/guest.py, mapped by guest_properties).
    'os_type': Property(str, frozenset(['linux', 'windows']), False),
    'os_distro': Property(str, OS_DISTROS, False),
    'os_version': Property(str, None, False),
    'architecture': Property(str, ARCHITECTURES, False),
    'hw_firmware_type': Property(str, frozenset(['bios', 'uefi']), False),
    'os_admin_user': Property(str, None, False),
    'hw_qemu_guest_agent': Property(str, frozenset(['yes', 'no']), False),
    'vmware_ostype': Property(str, VMWARE_OSTYPES, False),
    # Boot devices (guest probes: devices.py, firmware.py, windows.py).
    'hw_disk_bus': Property(str, DISK_BUSES, False),
    'hw_scsi_model': Property(str, SCSI_MODELS, False),
    'hw_vif_model': Property(str, VIF_MODELS, False),
    'hw_machine_type': Property(str, MACHINE_TYPES, False),
    'os_secure_boot': Property(str, SECURE_BOOT, False),
    'hw_tpm_version': Property(str, frozenset(['1.2', '2.0']), False),
    # GiB; Nova refuses a flavor whose root disk is smaller at the API.
    'min_disk': Property(int, None, True),
}


class Result(object):
    """What the core returns: properties, details and warnings."""

    def __init__(self, properties, details, warnings):
        self.properties = properties
        self.details = details
        self.warnings = warnings

    def to_dict(self):
        return {'properties': dict(self.properties),
                'details': dict(self.details),
                'warnings': list(self.warnings)}

    def __repr__(self):
        return 'Result(%r)' % self.to_dict()


def merge(*sources):
    """Merge raw findings into a :class:`Result`.

    :param sources: dicts of raw findings, least authoritative first (a
        later source's value for the same finding wins); a ``warnings``
        key carries that source's warnings.
    """
    findings = {}
    warnings = []
    for source in sources:
        for key, value in source.items():
            if key == 'warnings':
                warnings.extend(value)
                continue
            if value is None:
                continue
            findings[key] = value

    properties = {'disk_format': findings.pop('format', None),
                  'virtual_size': findings.pop('virtual_size', None)}
    properties['min_disk'] = min_disk(properties['virtual_size'])
    create_type = findings.get('vmdk_create_type')
    if create_type:
        properties['vmware_disktype'] = VMWARE_DISKTYPES.get(
            create_type.lower())
    adapter = findings.get('vmdk_adapter_type')
    if adapter:
        properties['vmware_adaptertype'] = VMWARE_ADAPTERTYPES.get(
            adapter.lower())
        if properties['vmware_adaptertype'] is None:
            warnings.append('VMDK adapter type %r has no Glance '
                            'vmware_adaptertype; not set' % adapter)
    properties.update(guest_properties(findings, properties['disk_format'],
                                       warnings))
    properties = validate(properties, warnings)
    return Result(properties, findings, warnings)


def min_disk(virtual_size):
    """The virtual size in GiB, rounded up: what a root disk must hold.

    Nova checks a flavor's root disk against ``min_disk`` when the
    instance is requested, and against the virtual size only when the
    compute host writes the disk (the boot then fails).
    """
    if not isinstance(virtual_size, int) or virtual_size <= 0:
        return None
    return -(-virtual_size // units.Gi)


def guest_properties(findings, disk_format, warnings):
    """Map the guest OS findings (libguestfs's terms) to Glance properties.

    Reads the ``guest_*`` findings of :mod:`~qimgintrospect.inspectors.guest`
    and leaves them in place (they stay in details, in libguestfs's own
    spelling). Returns nothing unless exactly one operating system was
    found. Every value returned is in :data:`VOCABULARY`; a finding that
    has no Glance spelling is left out, with a warning when a person could
    act on it.

    :param disk_format: the verified Glance disk format; ``vmware_ostype``
        is only set for ``vmdk``.
    :param warnings: list the warnings are appended to.
    """
    os_type = findings.get('guest_os_type')
    if os_type is None:
        return {}
    distro = _os_distro(findings, warnings)
    arch = _architecture(findings.get('guest_arch'), warnings)
    properties = {
        'os_type': os_type if os_type in ('linux', 'windows') else None,
        'os_distro': distro,
        'os_version': _os_version(findings, distro, warnings),
        'architecture': arch,
        # A hybrid disk boots either way: Nova's default (BIOS) will do.
        'hw_firmware_type': {'uefi': 'uefi', 'bios': 'bios'}.get(
            findings.get('guest_firmware')),
    }
    if findings.get('guest_cloud_init') == 'enabled':
        properties['os_admin_user'] = _admin_user(
            findings.get('guest_cloud_init_user'), warnings)
    elif findings.get('guest_cloudbase_init') == 'enabled':
        properties['os_admin_user'] = _admin_user(
            findings.get('guest_cloudbase_init_user'), warnings,
            'cloudbase-init username')
    if findings.get('guest_qemu_guest_agent'):
        properties['hw_qemu_guest_agent'] = 'yes'
    properties.update(boot_properties(findings, properties, warnings))
    if disk_format == 'vmdk':
        properties['vmware_ostype'] = vmware_ostype(
            os_type, distro or findings.get('guest_distro'),
            findings.get('guest_major_version'),
            findings.get('guest_minor_version'), arch,
            findings.get('guest_windows_installation_type')
            or findings.get('guest_product_variant'))
    return {k: v for k, v in properties.items() if v is not None}


def boot_properties(findings, properties, warnings):
    """What Nova must give the guest to boot it, from the probes' evidence.

    Nothing is set without evidence, and nothing that Nova's defaults
    already give (a virtio disk and NIC, BIOS):

    * ``os_secure_boot=optional`` when the guest is UEFI-only and every
      EFI loader on its ESP is signed (never ``required``: that would
      refuse hosts without Secure Boot), with ``hw_machine_type=q35``,
      which Secure Boot needs on x86_64 (Nova's secure-boot guide);
    * ``hw_tpm_version=2.0`` for Windows 11 (no ``hw_tpm_model``: nothing
      in the guest says which interface it had, and Nova's default TIS
      serves 2.0);
    * ``hw_disk_bus`` (and ``hw_scsi_model``) when the guest has no
      virtio-blk driver at boot: virtio-scsi if it has that, else SATA,
      else IDE (not on q35, which has no IDE bus);
    * ``hw_vif_model`` when it has no virtio NIC driver: the first
      emulated model it has a driver for.

    :param properties: the properties chosen so far (firmware type).
    """
    chosen = {}
    secure = (properties.get('hw_firmware_type') == 'uefi'
              and findings.get('guest_secure_boot_chain') == 'signed')
    if secure:
        chosen['os_secure_boot'] = 'optional'
        chosen['hw_machine_type'] = 'q35'
    if findings.get('guest_windows_product') in _TPM2_PRODUCTS:
        chosen['hw_tpm_version'] = '2.0'
    buses = findings.get('guest_disk_buses')
    if buses is not None and NOVA_DEFAULT_BUS not in buses:
        if 'virtio-scsi' in buses:
            chosen.update(hw_disk_bus='scsi', hw_scsi_model='virtio-scsi')
        elif 'sata' in buses:
            chosen['hw_disk_bus'] = 'sata'
        elif 'ide' in buses and not secure:
            chosen['hw_disk_bus'] = 'ide'
        else:
            warnings.append('the guest has no boot driver for a disk bus '
                            'Nova can give it%s; hw_disk_bus not set' % (
                                ' on q35' if 'ide' in buses else ''))
    models = findings.get('guest_nic_models')
    if models is not None and NOVA_DEFAULT_VIF not in models:
        fallback = next((m for m in _FALLBACK_VIFS if m in models), None)
        if fallback:
            chosen['hw_vif_model'] = fallback
        else:
            warnings.append('the guest has no driver for a NIC model Nova '
                            'can give it; hw_vif_model not set')
    return chosen


def _os_distro(findings, warnings):
    distro = findings.get('guest_distro') or 'unknown'
    release_id = (findings.get('guest_os_release_id') or '').lower()
    if distro in _GENERIC_DISTROS:
        # libguestfs only knows the family: the guest's own os-release
        # may name the distribution.
        mapped = OS_RELEASE_DISTROS.get(release_id)
    elif distro == 'sles' and release_id == 'sled':
        mapped = 'sled'
    else:
        mapped = GUESTFS_DISTROS.get(distro)
    if mapped is None and (distro != 'unknown' or release_id):
        warnings.append('guest distribution %r (os-release ID %r) has no '
                        'Glance os_distro; not set'
                        % (distro, release_id or None))
    return mapped


def _os_version(findings, distro, warnings):
    # The distributor's own spelling (os-release VERSION_ID: 22.04, 9.3,
    # 12) is what Glance asks for; libguestfs's numbers are the fallback
    # for guests without os-release (old releases). Windows from NT 10 on
    # is the product's number (10, 11, 2016 ... 2025) read from its build
    # (probes/windows_versions.py): the NT version is 10.0 for all six.
    if findings.get('guest_os_type') == 'windows':
        if findings.get('guest_windows_version'):
            return findings['guest_windows_version']
        if (findings.get('guest_major_version') or 0) >= 10:
            return None
    version_id = findings.get('guest_version_id')
    if version_id:
        if _VERSION_RE.match(version_id):
            return version_id
        warnings.append('guest VERSION_ID %r is not a version; os_version '
                        'not set from it' % version_id)
    major = findings.get('guest_major_version') or 0
    minor = findings.get('guest_minor_version') or 0
    if not major:
        return None
    if distro == 'ubuntu':
        return '%d.%02d' % (major, minor)
    if minor or findings.get('guest_os_type') == 'windows':
        return '%d.%d' % (major, minor)
    return str(major)


def _architecture(arch, warnings):
    if not arch or arch == 'unknown':
        return None
    name = _ARCH_ALIASES.get(arch, arch)
    if name not in ARCHITECTURES:
        warnings.append('guest architecture %r has no Glance architecture '
                        'name; not set' % arch)
        return None
    return name


def _admin_user(name, warnings, source='cloud-init default user'):
    if name is None:
        return None
    if not isinstance(name, str) or not _USER_RE.match(name):
        warnings.append('%s %r is not a valid user name; os_admin_user '
                        'not set' % (source, name))
        return None
    return name


def vmware_ostype(os_type, distro, major, minor, arch, variant=None):
    """Return the Glance ``vmware_ostype`` for a guest, or None.

    :param os_type: libguestfs's OS type (``linux``, ``windows``, ...).
    :param distro: Glance os_distro, or libguestfs's distro name for
        distributions Glance has no name for (``oraclelinux``).
    :param arch: Glance architecture name (``x86_64``, ``i686``, ...).
    :param variant: libguestfs's product variant; Windows ``Server``
        guests get the server names.
    :returns: a name in :data:`VMWARE_OSTYPES`, or None when VMware has
        none for this guest.
    """
    wide = arch in _64BIT
    if os_type == 'windows':
        candidates = _vmware_windows_candidates(major, minor, variant, wide)
    elif os_type == 'freebsd':
        candidates = ['freebsd64Guest' if wide else 'freebsdGuest']
    elif os_type == 'linux':
        candidates = _vmware_linux_candidates(distro, major or 0, wide)
    else:
        candidates = []
    for name in candidates:
        if name in VMWARE_OSTYPES:
            return name
    return None


def _vmware_windows_candidates(major, minor, variant, wide):
    stems = _VMWARE_WINDOWS.get((major or 0, minor or 0))
    if stems is None:
        return []
    # InstallationType "Server Core" and "Nano Server" are servers too.
    kind = (variant or '').lower()
    server = kind.startswith('server') or kind == 'nano server'
    stem = stems[1] if server else stems[0]
    if not wide:
        return [stem + 'Guest']
    # VMware spells the 64-bit names two ways: windows7_64Guest but
    # windows7Server64Guest and winLonghorn64Guest.
    return [stem + '_64Guest', stem + '64Guest']


def _vmware_linux_candidates(distro, major, wide):
    candidates = []
    if distro in _VMWARE_VERSIONED:
        stem, versions = _VMWARE_VERSIONED[distro]
        if major >= versions.start:
            version = min(major, versions.stop - 1)
            candidates.append('%s%d%s' % (stem, version,
                                          '_64Guest' if wide else 'Guest'))
    family = _VMWARE_FAMILIES.get(distro)
    if family:
        candidates.append(family + ('64Guest' if wide else 'Guest'))
    candidates.append('otherLinux64Guest' if wide else 'otherLinuxGuest')
    return candidates


def validate(properties, warnings):
    """Return the properties whose values are in :data:`VOCABULARY`.

    A property that is unknown or whose value is outside the vocabulary is
    dropped and a warning added; None values are dropped silently.
    """
    valid = {}
    for name, value in properties.items():
        if value is None:
            continue
        rule = VOCABULARY.get(name)
        if rule is None:
            warnings.append('%s is not in the Glance vocabulary; not set'
                            % name)
        elif not isinstance(value, rule.kind) or (
                rule.allowed is not None and value not in rule.allowed):
            warnings.append('%s=%r is not an allowed value; not set'
                            % (name, value))
        else:
            valid[name] = value
    return valid


def core_attributes(properties):
    """Split *properties* into (core image attributes, extra properties)."""
    core = {k: v for k, v in properties.items()
            if k in VOCABULARY and VOCABULARY[k].core}
    extra = {k: v for k, v in properties.items() if k not in core}
    return core, extra
