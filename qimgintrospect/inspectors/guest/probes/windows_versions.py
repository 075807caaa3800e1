"""Which Windows a registry describes: build, installation type, edition.

Every Windows from Windows 10 and Server 2016 on is NT 10.0, and Windows
11 still writes "Windows 10" in ProductName: only the build number
(``CurrentBuildNumber``) tells the products apart, and only the
installation type (``InstallationType``, with ``EditionID`` as the
cross-check) tells a client from a server of the same build (14393,
17763 and 26100 are both). Sources: Microsoft's release health pages
(windows10/windows11/windows-server release information) and the build
constants of Microsoft's hcsshim ``osversion`` package; see
doc/source/contributor/windows-facts.rst.

Pure functions and tables; :mod:`.windows` reads the values.
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

#: One Windows product. ``version``: how Microsoft numbers it in its name
#: (what ``os_version`` becomes: ``10``, ``11``, ``2016`` ... ``2025``);
#: ``osinfo``: libosinfo's short id; ``vmware``: VMware's guest OS
#: identifier (vim.vm.GuestOsDescriptor.GuestOsIdentifier, govmomi
#: vim25/types/enum.go; newer than Glance's vmware_ostype enum, so it
#: goes to details only); ``server``.
Product = collections.namedtuple('Product', [
    'name', 'version', 'osinfo', 'vmware', 'server'])

WINDOWS_10 = Product('Windows 10', '10', 'win10', 'windows9_64Guest', False)
WINDOWS_11 = Product('Windows 11', '11', 'win11', 'windows11_64Guest', False)

#: Long-term servers: build -> product (Server 2016 is RS1, 2019 RS5,
#: 2022 21H2 Server, 2025 24H2). Semi-annual channel servers (1709 to
#: 20H2, 23H2) have builds of their own and no year: they are not here.
SERVER_BUILDS = {
    14393: Product('Windows Server 2016', '2016', 'win2k16',
                   'windows9Server64Guest', True),
    17763: Product('Windows Server 2019', '2019', 'win2k19',
                   'windows2019srv_64Guest', True),
    20348: Product('Windows Server 2022', '2022', 'win2k22',
                   'windows2019srvNext_64Guest', True),
    26100: Product('Windows Server 2025', '2025', 'win2k25',
                   'windows2022srvNext_64Guest', True),
}
#: Client builds: Windows 10 from 10240 (1507) to 19045 (22H2), Windows
#: 11 from 22000 (21H2) to 26200 (25H2), the newest build published.
#: Builds past it are not guessed.
CLIENT_RANGES = ((10240, 19045, WINDOWS_10), (22000, 26200, WINDOWS_11))


def product(build, installation_type, edition_id):
    """The :class:`Product` these registry values describe, or why not.

    :param build: ``CurrentBuildNumber`` (str or int; None if absent).
    :param installation_type: ``InstallationType`` (``Client``,
        ``Server``, ``Server Core``, ``Nano Server``), None if absent.
    :param edition_id: ``EditionID`` (``Professional``,
        ``ServerDatacenter``, ...), None if absent.
    :returns: ``(product, None)`` or ``(None, reason)``: no product is
        guessed from a build outside the tables, or when the installation
        type and the edition disagree.
    """
    try:
        number = int(str(build).strip())
    except (TypeError, ValueError):
        return None, 'no CurrentBuildNumber (%r)' % (build,)
    server = is_server(installation_type, edition_id)
    if server is None:
        return None, ('InstallationType %r and EditionID %r do not say '
                      'whether it is a client or a server'
                      % (installation_type, edition_id))
    if server:
        found = SERVER_BUILDS.get(number)
        if found is None:
            return None, ('server build %d is not a long-term Windows '
                          'Server release' % number)
        return found, None
    for first, last, found in CLIENT_RANGES:
        if first <= number <= last:
            return found, None
    return None, 'client build %d is not a known Windows release' % number


def is_server(installation_type, edition_id):
    """True (server), False (client) or None (unknown or contradictory).

    ``InstallationType`` says it (``Server``, ``Server Core``, ``Nano
    Server`` are servers); ``EditionID`` (``Server...`` on servers) must
    not contradict it, and decides alone when the type is absent.
    """
    kind = (installation_type or '').strip().lower()
    edition = (edition_id or '').strip().lower()
    by_type = None
    if kind == 'client':
        by_type = False
    elif kind.startswith('server') or kind == 'nano server':
        by_type = True
    by_edition = edition.startswith('server') if edition else None
    if by_type is None:
        return by_edition
    if by_edition is not None and by_edition != by_type:
        return None
    return by_type
