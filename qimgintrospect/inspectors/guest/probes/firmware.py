"""Firmware: the EFI loaders on a drive's EFI system partitions.

A drive whose ESP holds a loader (``/EFI/<vendor>/<name>.efi``) is taken
to boot with UEFI; libguestfs itself reports no firmware type. The ESP is
mounted on its own, from the drive's own partitions (the census lists
them), never through the guest's fstab.
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


def probe(appliance, esp_partitions, warnings):
    """``guest_firmware`` and the loaders found on *esp_partitions*."""
    loaders = _efi_loaders(appliance, esp_partitions, warnings)
    found = {'guest_firmware': 'uefi' if loaders else 'bios'}
    if loaders:
        found['guest_efi_loaders'] = loaders
    return found


def _efi_loaders(appliance, partitions, warnings):
    """EFI loaders (``/EFI/<dir>/<name>.efi``) on the given ESPs."""
    loaders = []
    for partition in partitions:
        appliance.call('umount_all')
        try:
            appliance.call('mount_ro', partition, '/')
        except RuntimeError as err:
            warnings.append('EFI system partition could not be mounted: %s'
                            % appliance_mod.first_line(err))
            continue
        try:
            loaders += _loaders_on_mounted_esp(appliance)
        finally:
            appliance.call('umount_all')
    return sorted(set(loaders))[:common.MAX_ENTRIES]


def _loaders_on_mounted_esp(appliance):
    found = []
    efi = common.child_named(appliance, '/', 'efi')
    if efi is None:
        return found
    for vendor in common.listing(appliance, efi)[:common.MAX_ENTRIES]:
        directory = '%s/%s' % (efi, vendor)
        if not common.is_dir(appliance, directory):
            continue
        for name in common.listing(appliance, directory)[:common.MAX_ENTRIES]:
            path = '%s/%s' % (directory, name)
            if (name.lower().endswith('.efi')
                    and common.is_file(appliance, path)):
                found.append(common.text(path))
    return found
