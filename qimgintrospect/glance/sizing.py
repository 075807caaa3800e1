"""How large a catalogue's images are, and the workspace that needs.

The audit's summary tells an operator the image-size distribution of the
catalogue it walked and whether ``[introspection_workspace] quota_mb``
holds ``max_workers`` of its largest images at once.
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
import statistics

from qimgintrospect import opts

#: Buckets of the size distribution: (upper bound in bytes, label).
SIZE_BUCKETS = (
    (100 * 1024 ** 2, '< 100 MiB'),
    (1024 ** 3, '100 MiB - 1 GiB'),
    (10 * 1024 ** 3, '1 - 10 GiB'),
    (100 * 1024 ** 3, '10 - 100 GiB'),
    (None, '>= 100 GiB'),
)


def size_distribution(sizes):
    """Count, total, min, median, mean, 90th percentile, max and buckets.

    Every figure is in bytes; all are 0 for an empty catalogue.
    """
    ordered = sorted(sizes)
    buckets = collections.OrderedDict((label, 0) for _, label in SIZE_BUCKETS)
    for size in ordered:
        for bound, label in SIZE_BUCKETS:
            if bound is None or size < bound:
                buckets[label] += 1
                break
    if not ordered:
        figures = dict.fromkeys(('min', 'median', 'mean', 'p90', 'max'), 0)
    else:
        figures = {
            'min': ordered[0],
            'median': int(statistics.median(ordered)),
            'mean': int(statistics.fmean(ordered)),
            'p90': ordered[min(len(ordered) - 1,
                               (len(ordered) * 9 + 9) // 10 - 1)],
            'max': ordered[-1],
        }
    return dict(figures, count=len(ordered), total=sum(ordered),
                buckets=[{'range': label, 'count': count}
                         for label, count in buckets.items()])


def workspace_needs(sizes, conf):
    """The workspace quota ``max_workers`` needs for this catalogue.

    Each image being inspected holds its download and the core's private
    copy of it, both counted against the quota: twice its size.

    :returns: ``max_workers``, the configured ``quota_bytes``,
        ``needed_bytes`` (the max_workers largest images at once, so any
        mix of images fits), ``typical_bytes`` (max_workers images of the
        mean size) and ``enough`` (whether the quota covers needed_bytes).
    """
    group = conf[opts.WORKSPACE_GROUP]
    workers = group.max_workers
    largest = sorted(sizes)[-workers:]
    needed = 2 * sum(largest)
    mean = statistics.fmean(sizes) if sizes else 0
    quota = group.quota_mb * 1024 ** 2
    return {'max_workers': workers, 'quota_bytes': quota,
            'needed_bytes': needed, 'typical_bytes': int(2 * workers * mean),
            'enough': needed <= quota}
