"""Firmware: which boot loaders a drive holds, for BIOS and for UEFI.

libguestfs reports no firmware type; this module reads the drive's own
boot structures, never through the guest's fstab:

* UEFI: the EFI system partitions the census found on the drive, mounted
  on their own; a loader is a PE image with the EFI application
  subsystem under ``/EFI/<dir>/`` (:mod:`.pe`), signed when it carries
  an Authenticode-shaped signature. Firmware without boot entries (a new
  instance's empty NVRAM) starts the fallback loader
  ``/EFI/BOOT/BOOTX64.EFI`` (``BOOTAA64.EFI`` on arm64).
* BIOS: the MBR's boot code and what it needs: GRUB's boot.img (its
  messages) with its core image after the MBR or in a BIOS boot
  partition; Windows' MBR code (its messages) with an active partition
  holding ``bootmgr`` and ``Boot\\BCD``. Other boot code is not a loader
  (parted writes generic code into every MBR it makes).

``guest_firmware`` is ``uefi`` (EFI loaders and no BIOS loader),
``bios`` (a BIOS loader and no EFI loader), ``hybrid`` (both: a cloud
image that boots either way) or None (neither found). The Secure Boot
chain is ``signed`` when every EFI loader found is signed, the fallback
one included.
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


from qimgintrospect.inspectors.guest import appliance as appliance_mod
from qimgintrospect.inspectors.guest.probes import common
from qimgintrospect.inspectors.guest.probes import pe

#: GPT and MBR partition types (blkid spelling, lower case).
ESP_TYPES = frozenset(['c12a7328-f81f-11d2-ba4b-00a0c93ec93b', '0xef'])
BIOS_BOOT_TYPE = '21686148-6449-6e6f-744e-656564454649'
#: What GRUB's boot.img prints (grub-core/boot/i386/pc/boot.S).
GRUB_MESSAGES = b'GRUB \0Geom\0Hard Disk\0Read\0 Error'
#: What Windows' MBR code prints.
WINDOWS_MESSAGES = (b'Invalid partition table', b'Missing operating system')
#: The fallback loader of each architecture (UEFI spec, removable media).
FALLBACK_LOADERS = ('bootx64.efi', 'bootaa64.efi', 'bootia32.efi')

_BOOT_CODE = 440
_SECTOR = 512


def boot_code_kind(code):
    """``empty``, ``grub``, ``windows`` or ``unrecognised`` MBR boot code."""
    if not code.strip(b'\0'):
        return 'empty'
    if GRUB_MESSAGES in code:
        return 'grub'
    if all(message in code for message in WINDOWS_MESSAGES):
        return 'windows'
    return 'unrecognised'


def firmware_kind(efi_loaders, bios_loader):
    """``uefi``, ``bios``, ``hybrid`` or None, from the loaders found."""
    if efi_loaders and bios_loader:
        return 'hybrid'
    if efi_loaders:
        return 'uefi'
    if bios_loader:
        return 'bios'
    return None


def probe(appliance, drive, warnings):
    """The firmware findings of *drive* (a :class:`~.common.Drive`)."""
    schemes = {info.get('PART_ENTRY_SCHEME')
               for info in drive.partitions.values()} - {None}
    scheme = schemes.pop() if len(schemes) == 1 else None
    found = {'guest_partition_table': scheme}
    esps = sorted(d for d, info in drive.partitions.items()
                  if (info.get('PART_ENTRY_TYPE') or '').lower() in ESP_TYPES
                  and info.get('TYPE') == 'vfat')
    loaders = _efi_loaders(appliance, esps, warnings)
    found.update(_bios_loader(appliance, drive, scheme))
    names = sorted(loaders)
    kind = firmware_kind(names, found['guest_bios_loader'])
    found['guest_firmware'] = kind
    if names:
        found['guest_efi_loaders'] = names
        signed = sorted(p for p, s in loaders.items() if s)
        found['guest_efi_signed_loaders'] = signed
        fallback = [p for p in names
                    if p.rsplit('/', 1)[-1].lower() in FALLBACK_LOADERS
                    and p.lower().startswith('/efi/boot/')]
        found['guest_efi_fallback'] = fallback[0] if fallback else None
        found['guest_secure_boot_chain'] = (
            'signed' if fallback and len(signed) == len(names)
            else 'unsigned')
        if not fallback and kind == 'uefi':
            warnings.append('UEFI: no fallback loader /EFI/BOOT/BOOTX64.EFI '
                            'on the EFI system partition; an instance boots '
                            'only from boot entries its firmware does not '
                            'have')
    return found


def _efi_loaders(appliance, partitions, warnings):
    """{path: signed} of the EFI loaders on the given ESPs."""
    loaders = {}
    for partition in partitions:
        appliance.call('umount_all')
        try:
            appliance.call('mount_ro', partition, '/')
        except RuntimeError as err:
            warnings.append('EFI system partition could not be mounted: %s'
                            % appliance_mod.first_line(err))
            continue
        try:
            loaders.update(_loaders_on_mounted_esp(appliance))
        finally:
            appliance.call('umount_all')
    return dict(sorted(loaders.items())[:common.MAX_ENTRIES])


def _loaders_on_mounted_esp(appliance):
    """Loaders in ``/EFI/<vendor>/`` and one level below it.

    Windows keeps its boot manager in ``/EFI/Microsoft/Boot/``.
    """
    found = {}
    efi = common.child_named(appliance, '/', 'efi')
    if efi is None:
        return found
    directories = ['%s/%s' % (efi, vendor) for vendor in
                   common.listing(appliance, efi)[:common.MAX_ENTRIES]]
    for depth in (1, 2):
        below = []
        for directory in directories:
            if not common.is_dir(appliance, directory):
                continue
            for name in common.listing(appliance,
                                       directory)[:common.MAX_ENTRIES]:
                path = '%s/%s' % (directory, name)
                if not name.lower().endswith('.efi'):
                    below.append(path)
                    continue
                signed = loader_signed(appliance, path)
                if signed is not None:
                    found[common.text(path)] = signed
        directories = below[:common.MAX_ENTRIES]
    return found


def loader_signed(appliance, path):
    """True/False for an EFI application at *path*; None if it is none."""
    size = common.file_size(appliance, path)
    if not size:
        return None
    headers = pe.parse_headers(common.pread(appliance, path,
                                            pe.HEADER_BYTES) or b'')
    if headers is None or headers.subsystem not in pe.EFI_SUBSYSTEMS:
        return None
    certificate = b''
    if headers.certificate is not None:
        certificate = common.pread(appliance, path, pe.CERTIFICATE_HEADER,
                                   headers.certificate[0]) or b''
    return pe.signature_present(headers, size, certificate)


def _bios_loader(appliance, drive, scheme):
    try:
        code = appliance.call('pread_device', drive.disk, _BOOT_CODE, 0)
    except RuntimeError:
        code = None
    if not isinstance(code, bytes) or len(code) < _BOOT_CODE:
        return {'guest_mbr_boot_code': None, 'guest_bios_loader': None}
    kind = boot_code_kind(code)
    found = {'guest_mbr_boot_code': kind, 'guest_bios_loader': None}
    if kind == 'grub' and _grub_core(appliance, drive, scheme):
        found['guest_bios_loader'] = 'grub'
    elif kind == 'windows' and scheme == 'dos':
        active = [d for d, info in sorted(drive.partitions.items())
                  if info.get('PART_ENTRY_FLAGS') == '0x80']
        if active and _windows_boot_files(appliance, active[0]):
            found['guest_bios_loader'] = 'windows'
    return found


def _grub_core(appliance, drive, scheme):
    """GRUB's core image where boot.img looks for it."""
    if scheme == 'gpt':
        return any((info.get('PART_ENTRY_TYPE') or '').lower()
                   == BIOS_BOOT_TYPE for info in drive.partitions.values())
    try:
        sector = appliance.call('pread_device', drive.disk, _SECTOR, _SECTOR)
    except RuntimeError:
        return False
    return isinstance(sector, bytes) and bool(sector.strip(b'\0'))


def _windows_boot_files(appliance, partition):
    appliance.call('umount_all')
    try:
        appliance.call('mount_ro', partition, '/')
    except RuntimeError:
        return False
    try:
        boot = common.child_named(appliance, '/', 'boot')
        return (common.child_named(appliance, '/', 'bootmgr') is not None
                and boot is not None
                and common.child_named(appliance, boot, 'bcd') is not None)
    finally:
        appliance.call('umount_all')
