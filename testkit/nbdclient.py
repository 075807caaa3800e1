"""What tests and benchmarks read through an NBD export, and compare.

* :func:`qemu_img_info`: ``qemu-img info`` with the format forced, without
  the fields that name the file or its allocation, so a local file and an
  export of it compare equal when qemu-img sees the same image;
* :func:`read_through`: raw bytes of an export, read by ``qemu-io``.
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

import json
import re
import subprocess

_HEX_LINE = re.compile(r'^[0-9a-f]{8}: ((?: [0-9a-f]{2})+)', re.M)


def qemu_img_info(fmt, target, timeout=60):
    """``qemu-img info -f FMT TARGET`` as a dict, file names left out.

    :raises RuntimeError: qemu-img failed (its message included).
    """
    proc = subprocess.run(
        ['qemu-img', 'info', '--output=json', '-f', fmt, target],
        capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise RuntimeError('qemu-img info failed: %s' % proc.stderr)
    info = json.loads(proc.stdout)
    for name in ('filename', 'actual-size', 'dirty-flag'):
        info.pop(name, None)
    for extent in info.get('format-specific', {}).get('data', {}).get(
            'extents', []):
        extent.pop('filename', None)
    return info


def qemu_img_filenames(fmt, target, timeout=60):
    """Every file name ``qemu-img info`` gives: the image's, its extents'."""
    proc = subprocess.run(
        ['qemu-img', 'info', '--output=json', '-f', fmt, target],
        capture_output=True, text=True, timeout=timeout, check=True)
    info = json.loads(proc.stdout)
    extents = info.get('format-specific', {}).get('data', {}).get(
        'extents', [])
    return [info['filename']] + [e['filename'] for e in extents]


def read_through(uri, offset, length, timeout=60):
    """*length* bytes at *offset* of the export *uri* (format raw).

    :raises RuntimeError: qemu-io could not read them.
    """
    proc = subprocess.run(
        ['qemu-io', '-r', '-f', 'raw', '-c',
         'read -v %d %d' % (offset, length), uri],
        capture_output=True, text=True, timeout=timeout)
    if proc.returncode or 'read %d/%d' % (length, length) not in proc.stdout:
        raise RuntimeError('qemu-io failed: %s%s' % (proc.stdout,
                                                     proc.stderr))
    hexes = ''.join(_HEX_LINE.findall(proc.stdout))
    return bytes.fromhex(hexes.replace(' ', ''))
