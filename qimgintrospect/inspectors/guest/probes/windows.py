"""Windows guests: what the mounted system volume says.

Returns plain findings in the guest's own terms (``guest_*`` keys);
:mod:`qimgintrospect.normalise` maps them to Glance's vocabulary.
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


from qimgintrospect.inspectors.guest.probes import common

_QEMU_GA = ('Program Files', 'Qemu-ga', 'qemu-ga.exe')


def probe(appliance, warnings):
    """Findings of the guest whose system volume is mounted at ``/``.

    :param warnings: list the probe appends what a person should know to.
    """
    return {'guest_qemu_guest_agent': _has_guest_agent(appliance)}


def _has_guest_agent(appliance):
    path = '/' + '/'.join(_QEMU_GA)
    try:
        # NTFS names are case-insensitive; the appliance's are not.
        return common.is_file(
            appliance, appliance.call('case_sensitive_path', path))
    except RuntimeError:
        return False
