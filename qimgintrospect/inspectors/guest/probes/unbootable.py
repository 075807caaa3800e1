"""States that keep a Windows image from booting as an instance.

* ``guest-hibernated``: ``hiberfil.sys`` holds a hibernation image
  (``hibr``, ``HIBR``, ``RSTR``): Windows would resume a kernel session
  made for other hardware (Windows 8+ Fast Startup leaves one at every
  shutdown);
* ``guest-bitlocker``: a BitLocker volume (blkid ``TYPE=BitLocker``):
  its key is sealed to the source machine's TPM or needs a recovery
  password, so a new instance cannot read it (libguestfs finds no OS on
  an encrypted system volume);
* ``guest-fast-startup``: Fast Startup is on (``HiberbootEnabled`` 1):
  the image boots, but the next shutdown of an instance hibernates its
  kernel session, so snapshots of it resume rather than boot.

Each is a warning naming its code; with ``[introspection_guest]
refuse_unbootable`` the first two refuse the image (exit 3). Fast
Startup alone is never a refusal: the image as it is boots.
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

from qimgintrospect import exception

#: Codes that ``refuse_unbootable`` turns into refusals.
REFUSABLE = frozenset([exception.GUEST_HIBERNATED, exception.GUEST_BITLOCKER])


def bitlocker_volumes(drive):
    """The BitLocker volumes of *drive*, named as in an appliance alone."""
    return sorted(drive.names.get(device, device)
                  for device, info in drive.partitions.items()
                  if info.get('TYPE') == 'BitLocker')


def states(findings):
    """The ``(code, message)`` of every state *findings* show, in order."""
    found = []
    if findings.get('guest_hiberfil') == 'hibernated':
        found.append((exception.GUEST_HIBERNATED,
                      'Windows is hibernated: hiberfil.sys holds a '
                      'hibernation image (signature %r)%s; it would resume '
                      'a session made for other hardware' % (
                          findings.get('guest_hiberfil_signature'),
                          ', left by Fast Startup' if findings.get(
                              'guest_fast_startup') else '')))
    volumes = findings.get('guest_bitlocker_volumes')
    if volumes:
        found.append((exception.GUEST_BITLOCKER,
                      'BitLocker volume%s %s: encrypted with a key a new '
                      'instance does not have%s' % (
                          's' if len(volumes) > 1 else '',
                          ', '.join(volumes),
                          '' if findings.get('guest_roots')
                          else '; the operating system cannot be read')))
    if (findings.get('guest_fast_startup')
            and findings.get('guest_hiberfil') != 'hibernated'):
        found.append((exception.GUEST_FAST_STARTUP,
                      'Windows Fast Startup is on (HiberbootEnabled=1): '
                      'an instance\'s shutdown hibernates its kernel '
                      'session'))
    return found


def judge(findings, refuse):
    """Record the states of *findings* as warnings, or refuse the image.

    :param refuse: ``[introspection_guest] refuse_unbootable``.
    :returns: *findings* with ``guest_unbootable`` (the codes) and a
        warning per state, or an :class:`~exception.ImageRefused` for the
        first refusable state when *refuse* is true.
    """
    found = states(findings)
    if not found:
        return findings
    if refuse:
        for code, message in found:
            if code in REFUSABLE:
                return exception.ImageRefused(code, message)
    findings['guest_unbootable'] = [code for code, _ in found]
    findings.setdefault('warnings', []).extend(
        '%s (%s)' % (message, code) for code, message in found)
    return findings
