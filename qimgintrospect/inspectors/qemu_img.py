"""What qemu-img says about a checked workspace copy.

:func:`inspect` runs the executor with the format the header check decided
and checks qemu-img's answer a second time for everything that would make
the image reach outside itself, for encryption, and for a virtual size
other than the one the header check computed the way qemu does (a second
line of defence: the header check should already have refused these). It
returns flat findings for the normaliser.
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

from qimgintrospect import diskformats
from qimgintrospect import exception
from qimgintrospect import executor
from qimgintrospect.inspectors import header as header_inspector
from qimgintrospect import opts

# qemu-img's format-specific keys we report, by format, as finding names.
_SPECIFIC = {
    'qcow2': {'compat': 'qcow2_compat',
              'lazy-refcounts': 'qcow2_lazy_refcounts',
              'refcount-bits': 'qcow2_refcount_bits',
              'corrupt': 'qcow2_corrupt',
              'extended-l2': 'qcow2_extended_l2',
              'compression-type': 'qcow2_compression_type'},
    'vmdk': {'create-type': 'vmdk_create_type',
             'cid': 'vmdk_cid'},
}
_GENERAL = {'virtual-size': 'virtual_size',
            'actual-size': 'actual_size',
            'cluster-size': 'cluster_size',
            'dirty-flag': 'dirty_flag',
            'encrypted': 'encrypted'}


def inspect(path, disk_format, conf, header=None, filename=None):
    """Run qemu-img info on the copy at *path* as *disk_format* (Glance).

    :param path: the workspace copy, or the NBD URI of a remote image's
        export (see :func:`qimgintrospect.executor.qemu_img_info`).
    :param header: the :class:`~qimgintrospect.inspectors.header.Header`
        that passed for this image; qemu-img's virtual size must be the
        one it computed.
    :param filename: how qemu-img names the image in its answer, when
        not *path* (an export: its own spelling of the URI); a VMDK extent
        in any other file is refused.
    :returns: dict of findings (virtual_size, actual_size, ...).
    :raises ImageRefused: qemu-img-format-disagrees (another format, or
        another virtual size than the header's), backing-file, data-file,
        vmdk-external-extent, image-encrypted, virtual-size-too-large.
    :raises InspectionFailed: every executor error.
    """
    qemu_format = diskformats.QEMU_DRIVERS[disk_format]
    info = executor.qemu_img_info(path, qemu_format, conf)
    if info.get('format') != qemu_format:
        raise exception.ImageRefused(
            exception.QEMU_IMG_DISAGREES,
            'qemu-img read the image as %s, not %s'
            % (info.get('format'), qemu_format))
    backing = info.get('full-backing-filename') or info.get('backing-filename')
    if backing:
        raise exception.ImageRefused(
            exception.BACKING_FILE,
            'qemu-img reports a backing file: %r' % backing)
    specific = (info.get('format-specific') or {}).get('data') or {}
    if specific.get('data-file'):
        raise exception.ImageRefused(
            exception.DATA_FILE,
            'qemu-img reports an external data file: %r'
            % specific['data-file'])
    for extent in specific.get('extents') or []:
        if extent.get('filename') != (filename or path):
            raise exception.ImageRefused(
                exception.VMDK_EXTENT,
                'qemu-img reports a VMDK extent outside the image: %r'
                % extent.get('filename'))
    # The luks disk format is encryption itself, allowed or not by
    # allowed_formats; allow_encrypted is about encrypted qcow2.
    if (info.get('encrypted') and qemu_format != 'luks'
            and not conf[opts.FORMATS_GROUP].allow_encrypted):
        raise exception.ImageRefused(
            exception.IMAGE_ENCRYPTED,
            'qemu-img reports an encrypted image (%s)'
            % ((specific.get('encrypt') or {}).get('format') or 'unknown'))
    findings = {name: info[key] for key, name in _GENERAL.items()
                if key in info}
    for key, name in _SPECIFIC.get(qemu_format, {}).items():
        if key in specific:
            findings[name] = specific[key]
    if not isinstance(findings.get('virtual_size'), int):
        raise exception.QemuImgBadOutput(
            'qemu-img reported no virtual size: %r' % info)
    expected = header.findings.get('virtual_size') if header else None
    if expected and findings['virtual_size'] != expected:
        raise exception.ImageRefused(
            exception.QEMU_IMG_DISAGREES,
            'qemu-img reports a virtual size of %d bytes, but the header '
            'says %d bytes as qemu reads it'
            % (findings['virtual_size'], expected))
    header_inspector.check_virtual_size(findings['virtual_size'], conf)
    return findings
