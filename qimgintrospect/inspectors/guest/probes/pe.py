"""PE/COFF images (EFI loaders, Windows binaries): what their headers say.

Pure functions over bytes read from a guest (never executed, never
loaded): the COFF machine, the optional header's subsystem, and whether
the image carries an Authenticode-shaped signature (the security data
directory points, inside the file, at a ``WIN_CERTIFICATE`` of revision
2.0 holding a PKCS#7 SignedData). Layouts from Microsoft's "PE Format"
specification (https://learn.microsoft.com/en-us/windows/win32/debug/
pe-format): the DOS header's ``e_lfanew`` at 0x3C, ``PE\\0\\0``, the COFF
file header, the optional header (PE32 magic 0x10B, PE32+ 0x20B) and its
data directories, of which index 4 is the attribute certificate table.

What "signed" means here: a signature is present and well placed. Whose
key made it, and whether it covers the image, is not checked: that would
need Microsoft's CA certificates and the Authenticode digest of the
image. Signer names inside a certificate prove nothing and are not read.
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
import struct

#: How much of the start of a file :func:`parse_headers` needs: the DOS
#: header's e_lfanew may point anywhere in it.
HEADER_BYTES = 4096

#: COFF Machine -> Nova architecture name.
MACHINES = {0x8664: 'x86_64', 0xaa64: 'aarch64', 0x014c: 'i686',
            0x01c4: 'armv7l'}
#: Optional header Subsystem -> name.
SUBSYSTEMS = {1: 'native', 2: 'windows_gui', 3: 'windows_console',
              10: 'efi_application', 11: 'efi_boot_service_driver',
              12: 'efi_runtime_driver', 13: 'efi_rom'}
EFI_SUBSYSTEMS = frozenset(['efi_application'])

_PE32, _PE32_PLUS = 0x10b, 0x20b
_SECURITY_DIRECTORY = 4
_WIN_CERT_REVISION_2_0 = 0x0200
_WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002
#: Size of a WIN_CERTIFICATE header: dwLength, wRevision, wCertificateType.
CERTIFICATE_HEADER = 8

#: What the headers of one image say. ``certificate``: (file offset,
#: size) of the attribute certificate table, None when there is none.
Headers = collections.namedtuple('Headers',
                                 ['machine', 'subsystem', 'certificate'])


def parse_headers(head):
    """The :class:`Headers` of the PE image starting with *head*, or None.

    :param head: the first bytes of the file (:data:`HEADER_BYTES` are
        enough for any image whose headers fit there; others are None).
    :returns: None when *head* is not a PE image (no ``MZ``, no
        ``PE\\0\\0``, headers past *head*, an unknown optional header).
    """
    if len(head) < 0x40 or head[:2] != b'MZ':
        return None
    pe = struct.unpack_from('<I', head, 0x3c)[0]
    if pe + 24 + 2 > len(head) or head[pe:pe + 4] != b'PE\0\0':
        return None
    machine, _sections, _time, _symbols, _count, optional_size, _flags = (
        struct.unpack_from('<HHIIIHH', head, pe + 4))
    optional = pe + 24
    if optional + optional_size > len(head):
        return None
    magic = struct.unpack_from('<H', head, optional)[0]
    if magic == _PE32_PLUS:
        subsystem_at, count_at, directories = 0x44, 0x6c, 0x70
    elif magic == _PE32:
        subsystem_at, count_at, directories = 0x44, 0x5c, 0x60
    else:
        return None
    if optional_size < directories:
        return None
    subsystem = struct.unpack_from('<H', head, optional + subsystem_at)[0]
    count = struct.unpack_from('<I', head, optional + count_at)[0]
    certificate = None
    entry = directories + 8 * _SECURITY_DIRECTORY
    if count > _SECURITY_DIRECTORY and entry + 8 <= optional_size:
        # Unlike the other directories, this one holds a file offset.
        offset, size = struct.unpack_from('<II', head, optional + entry)
        if offset and size:
            certificate = (offset, size)
    return Headers(MACHINES.get(machine, 'unknown-0x%04x' % machine),
                   SUBSYSTEMS.get(subsystem, 'unknown-%d' % subsystem),
                   certificate)


def signature_present(headers, file_size, certificate_header):
    """Whether *headers* point at a well-formed Authenticode signature.

    :param file_size: the size of the whole file.
    :param certificate_header: the :data:`CERTIFICATE_HEADER` bytes at the
        certificate table's offset (what the caller read there).
    :returns: True when the table lies inside the file and starts with a
        WIN_CERTIFICATE of revision 2.0, type PKCS#7 SignedData, whose
        length fits in the table.
    """
    if headers is None or headers.certificate is None:
        return False
    offset, size = headers.certificate
    if offset + size > file_size or size < CERTIFICATE_HEADER:
        return False
    if len(certificate_header) < CERTIFICATE_HEADER:
        return False
    length, revision, kind = struct.unpack_from('<IHH', certificate_header)
    return (CERTIFICATE_HEADER < length <= size
            and revision == _WIN_CERT_REVISION_2_0
            and kind == _WIN_CERT_TYPE_PKCS_SIGNED_DATA)
