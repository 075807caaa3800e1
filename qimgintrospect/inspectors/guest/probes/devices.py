"""Device readiness: which disk buses and NICs the guest can boot with.

Nova gives a KVM guest a virtio disk and a virtio NIC unless the image
says otherwise; a guest without virtio drivers at boot hangs
(INACCESSIBLE_BOOT_DEVICE on Windows, a dracut or initramfs-tools
emergency shell on Linux). This module finds, for each disk bus and NIC
model Nova can give, whether the guest has what drives it when it boots:

* Windows (:func:`windows`): a storage driver drives the boot disk only
  when its service starts at boot (``Start`` 0) and its ``.sys`` is in
  ``System32\\drivers`` (what virt-v2v writes to make a guest boot on
  virtio, libguestfs-common mlcustomize/inject_virtio_win.ml); a NIC
  needs a driver bound to its PCI id in the DriverDatabase (Windows 8+:
  PnP loads it when the device appears) or, for virtio, the netkvm
  service;
* Linux (:func:`linux`): every module a device needs is built into the
  default kernel (``modules.builtin``) or, for a disk, in that kernel's
  initramfs (the root filesystem is not mounted yet); a NIC's driver may
  also load later from the root filesystem (``modules.dep``).

The findings are the ready buses and models in Nova's order of
preference (``guest_disk_buses``, ``guest_nic_models``) and, for each
candidate, its evidence (``guest_device_evidence``); None when the
evidence could not be read (no property is then set from it).
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

from qimgintrospect.inspectors.guest.probes import common

BOOT_START = 0

#: Disk bus -> alternative sets of Windows services, every one of which
#: must start at boot. virtio-win's viostor (virtio-blk) and vioscsi
#: (virtio-scsi); storahci (AHCI, Windows 8+; msahci before); the IDE
#: stack: a controller driver (intelide, pciide) and atapi, the channel.
WINDOWS_DISK_DRIVERS = collections.OrderedDict([
    ('virtio', (('viostor',),)),
    ('virtio-scsi', (('vioscsi',),)),
    ('sata', (('storahci',), ('msahci',))),
    ('ide', (('intelide', 'atapi'), ('pciide', 'atapi'))),
])
#: NIC model -> PCI ids of the devices QEMU gives for it (virtio-net
#: legacy and modern; Intel 82574L for e1000e, 82540EM for e1000;
#: RTL8139), and the service of the virtio driver.
WINDOWS_NICS = collections.OrderedDict([
    ('virtio', ('VEN_1AF4&DEV_1000', 'VEN_1AF4&DEV_1041')),
    ('e1000e', ('VEN_8086&DEV_10D3',)),
    ('e1000', ('VEN_8086&DEV_100E',)),
    ('rtl8139', ('VEN_10EC&DEV_8139',)),
])
NETKVM = 'netkvm'
_DISABLED = 4

#: Disk bus -> alternative sets of Linux modules, all built in or in the
#: initramfs. The virtio PCI transport comes first; a SCSI or SATA disk
#: also needs the SCSI disk driver (sd_mod).
LINUX_DISK_MODULES = collections.OrderedDict([
    ('virtio', (('virtio_pci', 'virtio_blk'),)),
    ('virtio-scsi', (('virtio_pci', 'virtio_scsi', 'sd_mod'),)),
    ('sata', (('ahci', 'sd_mod'),)),
    ('ide', (('ata_piix', 'sd_mod'), ('ata_generic', 'sd_mod'))),
])
#: NIC model -> alternative sets of Linux modules.
LINUX_NIC_MODULES = collections.OrderedDict([
    ('virtio', (('virtio_pci', 'virtio_net'),)),
    ('e1000e', (('e1000e',),)),
    ('e1000', (('e1000',),)),
    ('rtl8139', (('8139cp',), ('8139too',))),
])
#: Every module a disk could need (what the initramfs is searched for).
LINUX_DISK_MODULE_NAMES = frozenset(
    name for sets in LINUX_DISK_MODULES.values() for modules in sets
    for name in modules)


def windows(appliance, system, control_set):
    """Disk buses and NIC models the Windows guest is ready for.

    :param system: the open SYSTEM :class:`~.registry.Hive`.
    :param control_set: the current control set (``ControlSet001``).
    """
    services = {}

    def service(name):
        if name not in services:
            key = '%s\\Services\\%s' % (control_set, name)
            start = system.value(key, 'Start') if system.has_key(key) \
                else None
            driver = (common.windows_path(
                appliance, '/Windows/System32/drivers/%s.sys' % name)
                if start is not None else None)
            services[name] = (start, driver is not None)
        return services[name]

    evidence = {}
    buses = []
    for bus, alternatives in WINDOWS_DISK_DRIVERS.items():
        ready, said = _windows_disk(alternatives, service)
        evidence['disk:' + bus] = said
        if ready:
            buses.append(bus)
    models = []
    for model, pci_ids in WINDOWS_NICS.items():
        bound = [i for i in pci_ids if system.has_key(
            'DriverDatabase\\DeviceIds\\PCI\\' + i)]
        said = ('driver bound to PCI\\%s' % bound[0] if bound
                else 'no driver bound to PCI\\%s' % pci_ids[0])
        ready = bool(bound)
        if model == 'virtio':
            start, present = service(NETKVM)
            if start is not None and start != _DISABLED and present:
                ready = True
                said += '; %s service Start=%d, %s.sys present' % (
                    NETKVM, start, NETKVM)
        evidence['nic:' + model] = said
        if ready:
            models.append(model)
    return {'guest_disk_buses': buses, 'guest_nic_models': models,
            'guest_device_evidence': evidence}


def _windows_disk(alternatives, service):
    """(ready, evidence) of one bus: any one set of boot-start drivers."""
    said = []
    for names in alternatives:
        states = []
        for name in names:
            start, present = service(name)
            if start is None:
                states.append((False, '%s absent' % name))
            else:
                ok = start == BOOT_START and present
                states.append((ok, '%s Start=%d%s' % (
                    name, start, '' if present else ', no %s.sys' % name)))
        text = ' + '.join(s for _, s in states)
        if all(ok for ok, _ in states):
            return True, text
        said.append(text)
    return False, ' | '.join(said)


def linux(builtin, initramfs, on_disk):
    """Disk buses and NIC models the default Linux kernel is ready for.

    :param builtin: module names built into the kernel (modules.builtin).
    :param initramfs: module names in its initramfs.
    :param on_disk: module names installed for it (modules.dep), which
        can load once the root filesystem is mounted.
    """
    def where(name):
        if name in builtin:
            return 'built in'
        if name in initramfs:
            return 'in initramfs'
        if name in on_disk:
            return 'on disk'
        return None

    evidence = {}
    buses = _linux_ready(LINUX_DISK_MODULES, where, ('built in',
                                                     'in initramfs'),
                         'disk:', evidence)
    models = _linux_ready(LINUX_NIC_MODULES, where, ('built in',
                                                     'in initramfs',
                                                     'on disk'),
                          'nic:', evidence)
    return {'guest_disk_buses': buses, 'guest_nic_models': models,
            'guest_device_evidence': evidence}


def _linux_ready(table, where, enough, prefix, evidence):
    ready = []
    for name, alternatives in table.items():
        said = []
        found = False
        for modules in alternatives:
            places = [(m, where(m)) for m in modules]
            said.append(' + '.join('%s %s' % (m, p or 'absent')
                                   for m, p in places))
            if all(p in enough for _, p in places):
                found = True
                said = [said[-1]]
                break
        evidence[prefix + name] = ' | '.join(said)
        if found:
            ready.append(name)
    return ready


def module_name(path):
    """``virtio_blk`` for ``.../virtio_blk.ko.xz``; None if not a module.

    Module names treat ``-`` and ``_`` alike (modprobe); ``_`` is kept.
    """
    base = path.rsplit('/', 1)[-1]
    for suffix in ('.ko', '.ko.xz', '.ko.zst', '.ko.gz'):
        if base.endswith(suffix):
            return base[:-len(suffix)].replace('-', '_')
    return None
