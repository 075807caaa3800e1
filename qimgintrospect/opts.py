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

"""Every configuration option of qimgintrospect, in one place.

The groups carry an ``introspection_`` prefix because the Glance plugin
reads them from glance-api's own configuration, where short names such as
``[workspace]`` could collide with another project's.

``list_opts()`` is the entry point of ``oslo-config-generator``
(``oslo.config.opts`` in setup.cfg); ``register_opts()`` is what every
front end calls before reading an option.
"""

from oslo_config import cfg

GiB = 1024 ** 3
MiB = 1024 ** 2

#: Disk formats Glance knows, in Glance's spelling.
GLANCE_DISK_FORMATS = ('raw', 'qcow2', 'vmdk', 'vhd', 'vhdx', 'vdi', 'iso',
                       'ploop', 'qed', 'luks')

QEMU_IMG_GROUP = 'introspection_qemu_img'
WORKSPACE_GROUP = 'introspection_workspace'
FORMATS_GROUP = 'introspection_formats'

qemu_img_opts = [
    cfg.StrOpt('qemu_img_path',
               default='qemu-img',
               help='qemu-img binary to run. A bare name is looked up on '
                    'PATH.'),
    cfg.StrOpt('prlimit_path',
               default='prlimit',
               help='util-linux prlimit binary that applies the CPU-time and '
                    'address-space caps before qemu-img starts. The binary '
                    'is used rather than oslo.concurrency\'s Python wrapper '
                    'because it starts in about a millisecond instead of '
                    'several tens.'),
    cfg.IntOpt('cpu_time',
               default=30,
               min=1,
               help='CPU-time cap for one qemu-img run, in seconds (the '
                    'value Nova uses). A run that reaches it is killed and '
                    'the image is reported with qemu-img-limit-exceeded.'),
    cfg.IntOpt('address_space',
               default=1 * GiB,
               min=16 * MiB,
               help='Address-space cap for one qemu-img run, in bytes '
                    '(default 1 GiB, as Nova). A header that makes '
                    'qemu-img allocate past it ends the run with '
                    'qemu-img-limit-exceeded.'),
    cfg.IntOpt('timeout',
               default=60,
               min=1,
               help='Wall-clock limit for one qemu-img run, in seconds. '
                    'Catches a qemu-img that sleeps or waits on I/O, '
                    'which the CPU cap cannot see.'),
    cfg.StrOpt('root_helper',
               default='',
               help='Command prefix that runs qemu-img with other '
                    'privileges, for example "sudo qimgintrospect-rootwrap '
                    '/etc/qimgintrospect/rootwrap.conf". Empty: run '
                    'qemu-img as the current user. The filter for '
                    'oslo.rootwrap is shipped in rootwrap.d/.'),
]

workspace_opts = [
    cfg.StrOpt('directory',
               default='/var/lib/qimgintrospect/workspace',
               help='Directory that holds the private copies of images '
                    'being inspected. It is created with mode 0700 and '
                    'must be owned by the user running qimgintrospect.'),
    cfg.IntOpt('quota_mb',
               default=20 * 1024,
               min=1,
               help='Most space, in MiB, that all copies in the workspace '
                    'may hold at once. An image whose allocated size does '
                    'not fit is refused up front with '
                    'workspace-quota-exceeded. Size it as max_workers times '
                    'the allocated size of your largest images.'),
    cfg.IntOpt('min_free_mb',
               default=1024,
               min=0,
               help='Space, in MiB, that must stay free on the workspace '
                    'filesystem after a copy; a copy that would leave less '
                    'is refused with workspace-no-space.'),
    cfg.IntOpt('max_workers',
               default=2,
               min=1,
               help='Most inspections that may run at once on this host, '
                    'counted across all processes that share the '
                    'workspace directory.'),
    cfg.IntOpt('slot_wait_timeout',
               default=600,
               min=0,
               help='Seconds an inspection waits for one of the '
                    'max_workers slots before it fails with '
                    'workspace-busy.'),
]

formats_opts = [
    cfg.ListOpt('allowed_formats',
                default=['raw', 'qcow2', 'vmdk', 'vhd', 'vhdx', 'vdi', 'iso'],
                item_type=cfg.types.String(choices=GLANCE_DISK_FORMATS),
                help='Disk formats, in Glance\'s spelling, that are '
                     'inspected. Any other detected or declared format is '
                     'refused with format-not-allowed. qed, luks and ploop '
                     'are off by default: Glance should not take them from '
                     'a tenant.'),
    cfg.ListOpt('vmdk_allowed_types',
                default=['streamOptimized', 'monolithicSparse'],
                help='VMDK createType values that are accepted. Types that '
                     'keep their data in other files (monolithicFlat, '
                     'twoGbMaxExtent*, vmfs) are refused whatever this '
                     'says, because their extents lie outside the image.'),
    cfg.ListOpt('gpt_safety_checks_nonfatal',
                default=[],
                help='Names of oslo.utils GPT safety checks (for example '
                     '"mbr") whose failure on a raw disk with a partition '
                     'table is reported as a warning instead of refusing '
                     'the image, as Glance\'s option of the same name.'),
    cfg.IntOpt('max_virtual_size_gb',
               default=4096,
               min=1,
               help='Largest virtual size, in GiB, an image may claim. '
                    'Larger claims are refused with virtual-size-too-large '
                    'before qemu-img opens the image.'),
]


def register_opts(conf):
    """Register every option of the core on *conf*; safe to call twice."""
    conf.register_opts(qemu_img_opts, group=QEMU_IMG_GROUP)
    conf.register_opts(workspace_opts, group=WORKSPACE_GROUP)
    conf.register_opts(formats_opts, group=FORMATS_GROUP)


def list_opts():
    """Return the options for oslo-config-generator, by group."""
    return [
        (QEMU_IMG_GROUP, qemu_img_opts),
        (WORKSPACE_GROUP, workspace_opts),
        (FORMATS_GROUP, formats_opts),
    ]
