"""Remote images read by ranges instead of a whole download.

One module per concern:

* :mod:`.httpranges`: ranged GETs of one URL, every answer checked (a
  server that lies is refused with its own code; one that cannot serve
  ranges raises :class:`~qimgintrospect.exception.RangesNotHonoured`);
* :mod:`.blockcache`: the blocks read, kept in a sparse file of a
  workspace slot within a byte budget, each fetched once whichever
  process asks;
* :mod:`.nbdexport` and :mod:`.nbdplugin`: that image served read-only
  by nbdkit on a Unix socket, for qemu-img and the libguestfs appliance;
* :mod:`.image`: the three put together for a caller that holds a slot.
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
