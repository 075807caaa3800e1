"""Glance integration: three front ends over the one core.

* :mod:`.plugin`: the image-import plugin that runs inside glance-api
  (entry point ``qimgintrospect`` in ``glance.image_import.plugins``);
* :mod:`.client`: keystoneauth sessions, a python-glanceclient, and the
  download of images into a workspace slot, inspected there;
* :mod:`.properties`: what differs between Glance's properties and the
  image's, and what to do about it (shared by all three front ends);
* :mod:`.report`: the rows and counts of a report (``glance``, ``audit``);
* :mod:`.audit`: the catalogue walk; :mod:`.state`: what it learnt, per
  image and checksum; :mod:`.sizing`: the catalogue's sizes and the
  workspace they need.

None of them looks inside an image: they call
:func:`qimgintrospect.api.inspect` or :func:`qimgintrospect.api.inspect_many`.
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
