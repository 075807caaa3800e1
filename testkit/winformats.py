"""Windows on-disk formats written from scratch, for the Windows test guests.

What :mod:`testkit.windowsimages` puts inside its NTFS filesystems and
partitions, built here byte by byte so that no Windows file is ever
downloaded or copied:

* :func:`minimal_hive` and :func:`write_hive`: registry hives. hivex cannot
  make a hive out of nothing; it edits one. A minimal hive (the ``regf``
  base block and one ``hbin`` holding the root key and its security cell)
  is made here, and ``hivexregedit --merge`` writes the keys into it.
* :func:`pe_image`: PE32+ executables (``cmd.exe``, drivers, EFI loaders);
  libguestfs takes a Windows guest's architecture from ``cmd.exe``. An
  EFI loader can carry an Authenticode-shaped signature (a
  ``WIN_CERTIFICATE`` holding a PKCS#7 SignedData in the security
  directory), signed by a throw-away test key.
* :func:`hiberfil`: ``hiberfil.sys`` with a chosen signature.
* :func:`bitlocker_volume`: the first sectors of a BitLocker (Windows 7+)
  volume and its FVE metadata blocks, as blkid recognises them.

Layouts follow the public descriptions named beside each function; none of
Microsoft's code or data is reproduced.
"""

import datetime
import struct
import subprocess
import uuid

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography import x509
from cryptography.x509.oid import NameOID

# Registry value types (winnt.h).
REG_SZ = 1
REG_EXPAND_SZ = 2
REG_BINARY = 3
REG_DWORD = 4
REG_MULTI_SZ = 7
REG_QWORD = 11

_HBIN = 0x1000
_SECURITY_DESCRIPTOR = struct.pack(
    # Self-relative, no owner, group, SACL or DACL: hivex never reads it.
    '<BBHIIII', 1, 0, 0x8000, 0, 0, 0, 0)


class Value(object):
    """A registry value of an explicit type (str is REG_SZ, int REG_DWORD)."""

    def __init__(self, kind, data):
        self.kind = kind
        self.data = data


def expand_sz(text):
    """A REG_EXPAND_SZ value (``%SystemRoot%\\...``)."""
    return Value(REG_EXPAND_SZ, text)


def multi_sz(items):
    """A REG_MULTI_SZ value: UTF-16LE strings, each NUL-ended, then a NUL."""
    raw = ''.join(s + '\0' for s in items) + '\0'
    return Value(REG_MULTI_SZ, raw.encode('utf-16-le'))


def qword(number):
    return Value(REG_QWORD, struct.pack('<Q', number))


def binary(data):
    return Value(REG_BINARY, bytes(data))


def _cell(payload):
    """An allocated hbin cell: negative size, then *payload*, 8-aligned."""
    size = (4 + len(payload) + 7) & ~7
    return struct.pack('<i', -size) + payload + b'\0' * (
        size - 4 - len(payload))


def minimal_hive(root_name='ROOT'):
    """Return the bytes of an empty registry hive: a root key, no values.

    Layout (hivex's lib/hivex-internal.h; libyal's "Windows NT Registry
    File (REGF) format"): a 4 KiB base block (``regf``, sequence numbers,
    version 1.3, root cell offset, hbins size, checksum = XOR of its first
    127 dwords) then one 4 KiB ``hbin`` with the root ``nk`` cell, its
    ``sk`` (security) cell, and a free cell to the end of the bin.
    """
    name = root_name.encode('ascii')
    nk_offset = 0x20  # first cell, right after the 32-byte hbin header
    nk_size = (4 + 0x4c + len(name) + 7) & ~7
    sk_offset = nk_offset + nk_size
    nk = struct.pack(
        '<2sHqIIIIIIIIIIIIIIIHH',
        b'nk', 0x2c,  # HiveEntry | NoDelete | CompressedName (ASCII name)
        0,            # last written
        0,            # access bits
        0,            # parent (none)
        0, 0,         # subkeys, volatile subkeys
        0xffffffff, 0xffffffff,  # their lists
        0, 0xffffffff,           # values, value list
        sk_offset,               # security cell
        0xffffffff,              # class name
        0, 0, 0, 0,              # largest subkey/class/value name/data
        0,                       # workvar
        len(name), 0) + name
    sk = struct.pack('<2sHIIII', b'sk', 0, sk_offset, sk_offset, 1,
                     len(_SECURITY_DESCRIPTOR)) + _SECURITY_DESCRIPTOR
    cells = _cell(nk) + _cell(sk)
    assert len(_cell(nk)) == nk_size
    free = _HBIN - 0x20 - len(cells)
    hbin = struct.pack('<4sIIqqI', b'hbin', 0, _HBIN, 0, 0, 0)
    hbin += cells + struct.pack('<i', free) + b'\0' * (free - 4)
    assert len(hbin) == _HBIN

    base = bytearray(_HBIN)
    struct.pack_into('<4sIIqIIIIIII', base, 0, b'regf', 1, 1, 0, 1, 3, 0,
                     1, nk_offset, _HBIN, 1)
    file_name = ('\\SystemRoot\\System32\\Config\\' + root_name)[:31]
    base[0x30:0x30 + 2 * len(file_name)] = file_name.encode('utf-16-le')
    checksum = 0
    for (word,) in struct.iter_unpack('<I', bytes(base[:0x1fc])):
        checksum ^= word
    if checksum == 0xffffffff:
        checksum = 0xfffffffe
    elif checksum == 0:
        checksum = 1
    struct.pack_into('<I', base, 0x1fc, checksum)
    return bytes(base) + hbin


def _reg_quote(text):
    return '"%s"' % text.replace('\\', '\\\\').replace('"', '\\"')


def _reg_value(value):
    if isinstance(value, bool):
        raise TypeError('a registry value is not a bool: %r' % value)
    if isinstance(value, int):
        return 'dword:%08x' % value
    if isinstance(value, str):
        return _reg_quote(value)
    if isinstance(value, bytes):
        value = binary(value)
    if value.kind == REG_EXPAND_SZ:
        return 'str(2):' + _reg_quote(value.data)
    return 'hex(%x):%s' % (value.kind,
                           ','.join('%02x' % b for b in value.data))


def reg_text(prefix, keys):
    """The regedit text hivexregedit merges for *keys*.

    :param prefix: the hive's place in the registry, e.g.
        ``HKEY_LOCAL_MACHINE\\SOFTWARE``.
    :param keys: dict of key path (backslash separated, relative to the
        hive root) -> dict of value name -> value (str: REG_SZ, int:
        REG_DWORD, bytes: REG_BINARY, or a :class:`Value`). Parent keys
        are created as needed.
    """
    lines = ['Windows Registry Editor Version 5.00', '']
    seen = set()
    for path in keys:
        parts = path.split('\\')
        for depth in range(1, len(parts) + 1):
            partial = '\\'.join(parts[:depth])
            if partial in seen:
                continue
            seen.add(partial)
            lines.append('[%s\\%s]' % (prefix, partial))
            if partial == path:
                for name, value in keys[path].items():
                    lines.append('%s=%s' % (_reg_quote(name),
                                            _reg_value(value)))
            lines.append('')
    return '\n'.join(lines) + '\n'


def write_hive(path, prefix, keys, root_name='ROOT'):
    """Write a hive file at *path* holding *keys* (see :func:`reg_text`).

    :raises subprocess.CalledProcessError: hivexregedit refused the keys.
    """
    with open(path, 'wb') as f:
        f.write(minimal_hive(root_name))
    reg = path + '.reg'
    with open(reg, 'w', encoding='utf-8') as f:
        f.write(reg_text(prefix, keys))
    subprocess.run(['hivexregedit', '--merge', '--prefix', prefix, path,
                    reg], check=True, capture_output=True, timeout=120)
    return path


# PE/COFF (Microsoft's "PE Format" specification).
MACHINES = {'x86_64': 0x8664, 'i386': 0x014c, 'aarch64': 0xaa64}
SUBSYSTEMS = {'native': 1, 'gui': 2, 'console': 3, 'efi_application': 10,
              'efi_boot_service_driver': 11}
_WIN_CERT_REVISION_2_0 = 0x0200
_WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002
_SECURITY_DIRECTORY = 4


def pe_image(machine='x86_64', subsystem='console', code=b'\x31\xc0\xc3',
             signature=None):
    """Return a small valid PE image (PE32+ for 64-bit machines).

    One ``.text`` section holding *code* (default ``xor eax, eax; ret``).
    :param signature: bytes of a PKCS#7 SignedData (DER) to append as the
        attribute certificate table, pointed to by the security data
        directory, as Authenticode signing does; None for an unsigned image.
    """
    wide = machine in ('x86_64', 'aarch64')
    file_align, section_align = 0x200, 0x1000
    optional_size = 0xf0 if wide else 0xe0
    header = bytearray(file_align)
    header[0:2] = b'MZ'
    struct.pack_into('<I', header, 0x3c, 0x40)
    header[0x40:0x44] = b'PE\0\0'
    struct.pack_into('<HHIIIHH', header, 0x44, MACHINES[machine], 1,
                     0x5f000000, 0, 0, optional_size,
                     0x0022 if wide else 0x0102)
    opt = 0x58
    text_raw = code + b'\0' * (-len(code) % file_align)
    size_of_image = section_align * 2
    if wide:
        struct.pack_into(
            '<HBBIIIIIQIIHHHHHHIIIIHHQQQQII', header, opt,
            0x20b, 14, 0, len(text_raw), 0, 0, section_align, section_align,
            0x140000000, section_align, file_align, 10, 0, 10, 0, 10, 0, 0,
            size_of_image, file_align, 0, SUBSYSTEMS[subsystem], 0x8160,
            0x100000, 0x1000, 0x100000, 0x1000, 0, 16)
        directories = opt + 0x70
    else:
        struct.pack_into(
            '<HBBIIIIIIIIIHHHHHHIIIIHHIIIIII', header, opt,
            0x10b, 14, 0, len(text_raw), 0, 0, section_align, section_align,
            0, 0x400000, section_align, file_align, 10, 0, 10, 0, 10, 0, 0,
            size_of_image, file_align, 0, SUBSYSTEMS[subsystem], 0x8140,
            0x100000, 0x1000, 0x100000, 0x1000, 0, 16)
        directories = opt + 0x60
    section = opt + optional_size
    struct.pack_into('<8sIIIIIIHHI', header, section, b'.text', len(code),
                     section_align, len(text_raw), file_align, 0, 0, 0, 0,
                     0x60000020)
    image = bytearray(header + text_raw)
    if signature is not None:
        certificate = struct.pack('<IHH', 8 + len(signature),
                                  _WIN_CERT_REVISION_2_0,
                                  _WIN_CERT_TYPE_PKCS_SIGNED_DATA) + signature
        certificate += b'\0' * (-len(certificate) % 8)
        struct.pack_into('<II', image, directories + 8 * _SECURITY_DIRECTORY,
                         len(image), len(certificate))
        image += certificate
    struct.pack_into('<I', image, opt + 0x40, _pe_checksum(image, opt + 0x40))
    return bytes(image)


def _pe_checksum(image, checksum_offset):
    """The PE optional header CheckSum (16-bit folded sum plus length)."""
    data = bytes(image) + b'\0' * (len(image) % 2)
    total = 0
    for index, (word,) in enumerate(struct.iter_unpack('<H', data)):
        if checksum_offset // 2 <= index < checksum_offset // 2 + 2:
            continue
        total += word
        total = (total & 0xffff) + (total >> 16)
    return ((total & 0xffff) + (total >> 16) + len(image)) & 0xffffffff


def pkcs7_signature(content, signer='qimgintrospect test signer'):
    """A detached-content PKCS#7 SignedData (DER) over *content*.

    Signed by a throw-away self-signed EC key whose subject CN is
    *signer*: it has the shape of an Authenticode signature (what a PE's
    security directory holds), not its meaning. Nothing trusts this key.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, signer)])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    return (pkcs7.PKCS7SignatureBuilder().set_data(content)
            .add_signer(cert, key, hashes.SHA256())
            .sign(serialization.Encoding.DER,
                  [pkcs7.PKCS7Options.DetachedSignature,
                   pkcs7.PKCS7Options.Binary]))


#: CN of the throw-away key the test EFI loaders are signed with.
TEST_SIGNER = 'qimgintrospect test signer (not Microsoft)'


def efi_loader(signer=None):
    """An x86-64 EFI application; signed by *signer* (a CN) when given."""
    if signer is None:
        return pe_image(subsystem='efi_application')
    unsigned = pe_image(subsystem='efi_application')
    return pe_image(subsystem='efi_application',
                    signature=pkcs7_signature(unsigned, signer))


# hiberfil.sys (libyal libhibr "Windows Hibernation File format";
# ntfs-3g libntfs-3g/volume.c ntfs_volume_check_hiberfile).
HIBERFIL_SIGNATURES = (b'hibr', b'HIBR', b'wake', b'WAKE', b'RSTR')


def hiberfil(signature=None, size=64 * 1024):
    """``hiberfil.sys``: *signature* (4 bytes) then zeros; None: all zeros.

    A zeroed first page is what a clean shutdown leaves; ``hibr``/``HIBR``
    a hibernated system (``HIBR`` from Vista on, also Windows 8+'s Fast
    Startup). ntfs-3g refuses a file shorter than one 4 KiB page, so
    *size* is at least that.
    """
    if size < 4096:
        raise ValueError('hiberfil.sys must hold at least one page')
    data = bytearray(size)
    if signature is not None:
        if len(signature) != 4:
            raise ValueError('a hibernation signature is 4 bytes')
        data[0:4] = signature
        # PO_MEMORY_IMAGE: image type, checksum, length, page self, size.
        struct.pack_into('<IIIQI', data, 4, 9, 0, 0x128, 0, 4096)
    return bytes(data)


# BitLocker (libyal libbde "BitLocker Drive Encryption (BDE) format";
# util-linux libblkid/src/superblocks/bitlocker.c).
BITLOCKER_GUID = uuid.UUID('4967d63b-2e29-4ad8-8399-f6a339e3d001')
_FVE_SIGNATURE = b'-FVE-FS-'


def bitlocker_volume(sectors, description='TESTHOST C: 1/1/2024'):
    """Return ``{offset: bytes}`` to write at the start of a partition.

    The Windows 7+ volume header (jump ``EB 58 90``, ``-FVE-FS-`` at
    offset 3, a FAT32-shaped BPB, the BitLocker GUID at 160 and the three
    FVE metadata block offsets at 176) and three FVE metadata blocks
    (version 2, each with a description entry), which is what blkid
    checks before it says ``TYPE="BitLocker"``. Nothing else of the
    volume is written: the rest reads as encrypted data would, opaque.

    :param sectors: the partition's size in 512-byte sectors.
    """
    header = bytearray(512)
    header[0:3] = b'\xeb\x58\x90'
    header[3:11] = _FVE_SIGNATURE
    struct.pack_into('<HBHBHHBHHHI', header, 11, 512, 8, 0, 0, 0, 0, 0xf8,
                     0, 0x3f, 0xff, 0)
    struct.pack_into('<I', header, 36, 0x1fe0)
    header[71:82] = b'NO NAME    '
    header[82:90] = b'FAT32   '
    header[160:176] = BITLOCKER_GUID.bytes_le
    metadata_size = 64 * 1024
    offsets = [2 * 1024 * 1024, 4 * 1024 * 1024, 6 * 1024 * 1024]
    if sectors * 512 < offsets[-1] + metadata_size:
        raise ValueError('a BitLocker-like volume needs at least 7 MiB')
    struct.pack_into('<QQQ', header, 176, *offsets)
    header[510:512] = b'\x55\xaa'
    writes = {0: bytes(header)}
    for offset in offsets:
        writes[offset] = _fve_metadata_block(sectors, offsets, description)
    return writes


def _fve_metadata_block(sectors, offsets, description):
    text = description.encode('utf-16-le') + b'\0\0'
    # Entry: size, type 0x0007 (description), value type 0x0002 (string),
    # version 1.
    entry = struct.pack('<HHHH', 8 + len(text), 0x0007, 0x0002, 1) + text
    metadata_header = struct.pack(
        '<IIII16sIHHQ', 48 + len(entry), 1, 48, 48 + len(entry),
        uuid.UUID('6f1a7b6c-0e3d-4a51-9c5d-1a2b3c4d5e6f').bytes_le, 1,
        0x8004,  # AES-XTS-128
        0, 0x01da3c3b4c5d6e7f)
    block_header = struct.pack(
        '<8sHHHHQIIQQQQ', _FVE_SIGNATURE, 0, 2, 4, 4, sectors * 512, 0, 16,
        offsets[0], offsets[1], offsets[2], 8 * 1024 * 1024)
    return block_header + metadata_header + entry
