"""How far the guest stage got for one image: ``details['guest_stage']``.

Every findings dict the guest package returns carries one of these, so a
front end can tell an answer that will be the same next time (complete,
or skipped because there is nothing to read) from one that may not (the
appliance could not start on this host, or libguestfs failed part-way):
the audit records the first kind and asks again about the second.
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

KEY = 'guest_stage'

#: The guest was inspected (whatever it holds: an OS, several, none).
COMPLETE = 'complete'
#: Nothing to read: the contents are encrypted.
SKIPPED = 'skipped'
#: libguestfs refused part of the inspection; the answer may be partial.
FAILED = 'failed'
#: No appliance could start on this host (or libguestfs is missing).
UNAVAILABLE = 'unavailable'

#: Stages that may end otherwise on another run.
RETRIABLE = frozenset([FAILED, UNAVAILABLE])


def findings(status, warning=None):
    """A findings dict that says only how far the stage got."""
    return {KEY: status, 'warnings': [warning] if warning else []}
