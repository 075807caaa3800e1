"""What an audit or ``glance IMAGE_ID`` reports, and what it writes.

:func:`image_rows` compares one image's outcome with what Glance has
(:mod:`~qimgintrospect.glance.properties`), applies the :class:`Policy`
(write the difference back or not) and returns the report's rows;
:class:`Report` gathers a run's rows, its :class:`Counts`, the sizes of
the images listed and how the images inspected were read (:class:`Reads`).
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

from qimgintrospect import exception
from qimgintrospect.glance import client as glance_client
from qimgintrospect.glance import properties
from qimgintrospect.glance import sizing
from qimgintrospect.remote import source as remote_source

#: One line of a report. ``difference`` is a kind from
#: :mod:`~qimgintrospect.glance.properties`, or, for an image that was not
#: compared, ``refused``, ``failed`` or ``not-inspected`` with the reason
#: in ``note``.
Row = collections.namedtuple('Row', [
    'image_id', 'owner', 'property', 'glance', 'image', 'difference',
    'action', 'note'])
COLUMNS = Row._fields

REFUSED = 'refused'
FAILED = 'failed'
NOT_INSPECTED = 'not-inspected'

#: Action column: what the policy chose, as done or as it would be done.
_ACTION_WORDS = {
    # action: (without --apply, with --apply)
    properties.SET: ('would set', 'set'),
    properties.REMOVE: ('would remove', 'removed'),
    properties.KEEP: ('kept', 'kept'),
    properties.READ_ONLY: ('read-only', 'read-only'),
    properties.NOTHING: ('', ''),
}


class Policy(collections.namedtuple('Policy', [
        'apply', 'overwrite', 'remove_stale'])):
    """What to do about differences: write them or not, and which."""

    __slots__ = ()

    def __new__(cls, apply=False, overwrite=True, remove_stale=False):
        return super().__new__(cls, apply, overwrite, remove_stale)


def checksum_of(image):
    """The key of the image's data: its multihash, else its MD5, or None."""
    return image.get('os_hash_value') or image.get('checksum')


def image_rows(client, image, outcome, policy, include_same=False):
    """Compare one image's outcome with Glance and apply the policy.

    :param outcome: a :class:`~qimgintrospect.normalise.Result` or the
        :class:`~qimgintrospect.exception.IntrospectionError` the image
        raised.
    :returns: ``(rows, changed)``: the report lines for this image and
        whether Glance was changed.
    """
    image_id, owner = image['id'], image.get('owner')
    if isinstance(outcome, exception.IntrospectionError):
        kind = {exception.EXIT_REFUSED: REFUSED,
                exception.EXIT_FAILED: FAILED}.get(outcome.exit_code,
                                                   NOT_INSPECTED)
        note = '%s: %s' % (outcome.code, outcome.message)
        return [Row(image_id, owner, '', None, None, kind, '', note)], False

    differences = properties.compare(
        outcome.properties, image, overwrite=policy.overwrite,
        remove_stale=policy.remove_stale)
    to_set, to_remove = properties.changes(differences)
    note = ''
    changed = False
    if policy.apply and (to_set or to_remove):
        try:
            glance_client.update_image(client, image_id, to_set, to_remove)
            changed = True
        except exception.IntrospectionError as err:
            note = '%s: %s' % (err.code, err.message)
    rows = []
    for d in differences:
        if d.kind == properties.SAME and not include_same:
            continue
        words = _ACTION_WORDS[d.action]
        rows.append(Row(image_id, owner, d.name, d.glance, d.image, d.kind,
                        words[1] if changed else words[0],
                        note if d.action in (properties.SET,
                                             properties.REMOVE) else ''))
    return rows, changed


class Counts(object):
    """How many images a run saw, and what became of them."""

    #: ``incomplete``: inspected, but a stage that may succeed next time
    #: is missing (no guest appliance could start): asked again next run.
    FIELDS = ('listed', 'inspected', 'unchanged', 'refused', 'failed',
              'incomplete', 'not_inspected', 'deferred', 'differing',
              'changed')

    def __init__(self):
        for field in self.FIELDS:
            setattr(self, field, 0)

    def to_dict(self):
        return {field: getattr(self, field) for field in self.FIELDS}


class Reads(object):
    """How the images a run inspected were read, and what that cost.

    Per image (``details`` of its result, see
    :data:`qimgintrospect.remote.source.DETAILS`): by ranges or by a
    whole download, the bytes read beside the image's size, the
    requests; and the same summed per way and in all.
    """

    WAYS = (remote_source.RANGES, remote_source.DOWNLOAD)

    def __init__(self):
        self.images = []

    def add(self, image, outcome):
        """Count one image's outcome (only a result says how it was read)."""
        if isinstance(outcome, exception.IntrospectionError):
            return
        details = outcome.details
        if details.get('read_by') not in self.WAYS:
            return
        self.images.append({'image_id': image['id'],
                            'read_by': details['read_by'],
                            'size': details['image_size'],
                            'bytes_read': details['bytes_read'],
                            'requests': details['requests']})

    def to_dict(self):
        """Totals per way (``ranges``, ``download``), in all, per image."""
        summary = {way: _read_totals([i for i in self.images
                                      if i['read_by'] == way])
                   for way in self.WAYS}
        summary['total'] = _read_totals(self.images)
        summary['images'] = list(self.images)
        return summary


def _read_totals(images):
    return {'images': len(images),
            'size': sum(i['size'] for i in images),
            'bytes_read': sum(i['bytes_read'] for i in images),
            'requests': sum(i['requests'] for i in images)}


class Report(object):
    """The rows of a run, its counts, sizes and reads."""

    def __init__(self):
        self.rows = []
        self.counts = Counts()
        self.sizes = []
        self.reads = Reads()

    def summary(self, conf):
        """Counts, the image-size distribution and the workspace it needs.

        And ``reads``: how the images inspected in this run were read
        (:meth:`Reads.to_dict`).
        """
        return {'images': self.counts.to_dict(),
                'sizes': sizing.size_distribution(self.sizes),
                'workspace': sizing.workspace_needs(self.sizes, conf),
                'reads': self.reads.to_dict()}
