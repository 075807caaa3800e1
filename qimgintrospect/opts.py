"""Every configuration option of qimgintrospect, in one place.

The groups carry an ``introspection_`` prefix because the Glance plugin
reads them from glance-api's own configuration, where short names such as
``[workspace]`` could collide with another project's.

``list_opts()`` is the entry point of ``oslo-config-generator``
(``oslo.config.opts`` in setup.cfg); ``register_opts()`` is what every
front end calls before reading an option.
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

from oslo_config import cfg
from oslo_utils import units

from qimgintrospect import diskformats

#: Stack size of every qemu-img thread, and stack cap of the run.
QEMU_IMG_STACK_SIZE = 2 * units.Mi

QEMU_IMG_GROUP = 'introspection_qemu_img'
WORKSPACE_GROUP = 'introspection_workspace'
FORMATS_GROUP = 'introspection_formats'
IMPORT_GROUP = 'introspection_import'
AUDIT_GROUP = 'introspection_audit'
GUEST_GROUP = 'introspection_guest'
REMOTE_GROUP = 'introspection_remote'

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
               default=1 * units.Gi,
               min=16 * units.Mi,
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
    cfg.IntOpt('stack_size',
               default=QEMU_IMG_STACK_SIZE,
               min=256 * 1024,
               help='Stack cap for one qemu-img run, in bytes; glibc also '
                    'gives every qemu-img thread a stack this large. '
                    'qemu-img starts a varying number of I/O threads (up '
                    'to 64), so with the usual 8 MiB stacks what is left '
                    'of address_space for the image\'s own tables would '
                    'depend on a race; with 2 MiB stacks the threads take '
                    'at most about 130 MiB of it.'),
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
                item_type=cfg.types.String(
                    choices=diskformats.GLANCE_DISK_FORMATS),
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
    cfg.BoolOpt('allow_encrypted',
                default=False,
                help='Whether a LUKS-encrypted qcow2 image is inspected '
                     'instead of refused with image-encrypted. When it is, '
                     'the encryption is reported in details '
                     '(qcow2_encryption) and as a warning: the image boots '
                     'only with its secret, which Glance does not hold. A '
                     'qcow2 image encrypted with the legacy AES scheme is '
                     'refused whatever this says.'),
    cfg.IntOpt('max_virtual_size_gb',
               default=4096,
               min=1,
               help='Largest virtual size, in GiB, an image may claim. '
                    'Larger claims are refused with virtual-size-too-large '
                    'before qemu-img opens the image.'),
]

# What the import plugin may do with an image it did not inspect.
_IMPORT_POLICIES = [
    ('fail', 'the import fails; the reason is the import task\'s message'),
    ('warn', 'the image is imported and the reason is recorded in '
             'warning_property'),
]

# The Glance image-import plugin reads these from glance-api.conf.
import_opts = [
    cfg.StrOpt('on_refusal',
               default='fail',
               choices=_IMPORT_POLICIES,
               help='What the import plugin does with an image the core '
                    'refuses as unsafe or not what it claims (exit code 3: '
                    'backing file, format mismatch, ...). "fail" is the '
                    'default because an image refused here is one Nova '
                    'should never boot.'),
    cfg.StrOpt('on_failure',
               default='fail',
               choices=_IMPORT_POLICIES,
               help='What the import plugin does when an image could not be '
                    'inspected (exit code 4: corrupt or truncated image, '
                    'qemu-img limit hit, workspace full or busy). "fail" by '
                    'default: a qemu-img that hits its CPU or memory cap is '
                    'as likely a hostile image as a broken one.'),
    cfg.StrOpt('warning_property',
               default='qimgintrospect_warning',
               help='Image property that records, as "CODE: message", why '
                    'an image imported under a "warn" policy was not '
                    'inspected. Not in the os_glance namespace, which '
                    'Glance reserves.'),
    cfg.BoolOpt('overwrite_uploader_properties',
                default=False,
                help='Whether a property found in the image replaces a '
                     'different value the uploader set. Either way the '
                     'conflict is logged; by default the uploader\'s value '
                     'is kept, as the uploader may know better (a VMDK whose '
                     'descriptor names the wrong adapter).'),
    cfg.BoolOpt('guest_inspection',
                default=False,
                help='Whether the import plugin runs the optional guest OS '
                     'inspection ([introspection_guest]) when that is '
                     'enabled. Off by default for the plugin alone: it boots '
                     'an appliance per image, which takes tens of seconds '
                     'inside Glance\'s import workers; the audit can add '
                     'those properties later.'),
]

# `qimg-introspect audit` reads these from qimgintrospect.conf.
audit_opts = [
    cfg.StrOpt('state_file',
               default='/var/lib/qimgintrospect/audit.sqlite',
               help='SQLite file where the audit records, per image id and '
                    'checksum, what the image said. A later run inspects '
                    'only images that are new or whose data changed, and '
                    'an interrupted run continues where it stopped. Not '
                    'used when state_connection is set.'),
    cfg.IntOpt('page_size',
               default=100,
               min=1,
               max=1000,
               help='Images asked of Glance per page while walking the '
                    'catalogue.'),
    cfg.StrOpt('state_connection',
               secret=True,
               help='SQLAlchemy URL of a database server that holds the '
                    'audit state instead of state_file, for workers on '
                    'several hosts: '
                    'postgresql+psycopg2://USER:PASSWORD@HOST/DB or '
                    'mysql+pymysql://USER:PASSWORD@HOST/DB (MariaDB). The '
                    'schema is created or upgraded when an audit starts. '
                    'When set, state_file is not used.'),
    cfg.StrOpt('coordination_url',
               secret=True,
               help='tooz URL of the coordination service the audit '
                    'workers of several hosts share the catalogue through, '
                    'for example redis://:PASSWORD@HOST:6379 (Redis with '
                    'appendonly yes) or etcd3+http://HOST:2379. Every host '
                    'runs the same audit; each image is inspected by one of '
                    'them. The driver\'s options go in the query string '
                    '(Redis: membership_timeout, lock_timeout: how long a '
                    'killed worker\'s share and claims wait before the '
                    'others take them). The workers must share the state '
                    '(state_connection). Empty: this host audits alone.'),
    cfg.IntOpt('refresh_interval',
               default=10,
               min=1,
               help='Seconds between two looks at the audit group (with '
                    'coordination_url): a worker that joined or left moves '
                    'images between the workers, and images whose claim '
                    'could not be had are tried again. The group is also '
                    'looked at after each page of the catalogue.'),
    cfg.IntOpt('list_retries',
               default=5,
               min=0,
               help='How often a page of the catalogue that Glance did not '
                    'answer (a 5xx, a refused or broken connection) is '
                    'asked again before the audit stops with '
                    'glance-unreachable, waiting 1 s, 2 s, 4 s, ... (at '
                    'most 30 s) in between.'),
]


# Guest OS detection with libguestfs (qimgintrospect.inspectors.guest).
guest_opts = [
    cfg.BoolOpt('enabled',
                default=True,
                help='Whether to look inside images with a libguestfs '
                     'appliance and set os_type, os_distro, os_version, '
                     'architecture, hw_firmware_type, os_admin_user, '
                     'hw_qemu_guest_agent, the hw_* properties a guest '
                     'needs to boot (disk bus, NIC model, machine type, '
                     'vTPM), os_secure_boot (and vmware_ostype for VMDK). '
                     'It needs the libguestfs-tools and python3-guestfs '
                     'packages (without them the OS properties are skipped '
                     'with a warning, see fail_if_unavailable) and boots a '
                     'small VM for every batch of images (seconds with KVM, '
                     '20-30 s under software emulation).'),
    cfg.BoolOpt('fail_if_unavailable',
                default=False,
                help='When guest detection is enabled but libguestfs is not '
                     'installed or its appliance cannot start on this host, '
                     'fail the inspection with guest-unavailable instead of '
                     'returning the format properties with a warning.'),
    cfg.IntOpt('launch_timeout',
               default=180,
               min=1,
               help='Seconds the appliance may take to boot. Past it, its '
                    'qemu is killed and the images get guest-timeout (or '
                    'guest-unavailable when an appliance without any image '
                    'cannot boot either). Under software emulation a boot '
                    'takes 15-40 s on a loaded host.'),
    cfg.IntOpt('inspect_timeout',
               default=120,
               min=1,
               help='Seconds the inspection of one drive may take once the '
                    'appliance is up; an appliance with N drives gets N '
                    'times this. Past it, its qemu is killed: the image '
                    'inspected alone gets guest-timeout.'),
    cfg.IntOpt('memory_mb',
               default=1024,
               min=256,
               help='Memory of the appliance VM, in MiB.'),
    cfg.IntOpt('drives_per_appliance',
               default=4,
               min=1,
               max=25,
               help='Most images of one owner inspected in one appliance '
                    'launch by inspect_many() (the audit, batches of '
                    'imports). Images of different owners never share an '
                    'appliance. Up to max_workers appliances run at once, '
                    'so on a host without KVM several small appliances '
                    'finish sooner than one large one.'),
    cfg.BoolOpt('refuse_unbootable',
                default=False,
                help='Whether an image whose guest cannot boot as it is, '
                     'a hibernated Windows (guest-hibernated) or one '
                     'holding a BitLocker volume (guest-bitlocker), is '
                     'refused (exit code 3; the import plugin\'s '
                     'on_refusal applies) instead of inspected with a '
                     'warning naming the code. Windows Fast Startup '
                     '(guest-fast-startup) stays a warning either way.'),
    cfg.StrOpt('accelerator',
               default='auto',
               choices=[
                   ('auto', 'KVM where it works, else software emulation: '
                            'the first appliance of a host is preceded by '
                            'a probe (an appliance without any image, '
                            'started under KVM and stopped as soon as its '
                            'guest writes to the console, about half a '
                            'second where KVM works); if the guest says '
                            'nothing within accelerator_probe_timeout or '
                            'qemu aborts, appliances run under TCG, with '
                            'a warning. The verdict is kept in the '
                            'workspace (.host/accelerator.json) for a day, '
                            'or until qemu, the kernel or libguestfs '
                            'change.'),
                   ('kvm', 'KVM only (libguestfs force_kvm): no probe, no '
                           'fallback; a launch fails where KVM does.'),
                   ('tcg', 'software emulation only (libguestfs '
                           'force_tcg): no probe.'),
               ],
               help='Which accelerator the appliances run under. '
                    'backend_settings holding force_kvm or force_tcg (or '
                    'LIBGUESTFS_BACKEND_SETTINGS, when backend_settings is '
                    'empty) wins over this option.'),
    cfg.IntOpt('accelerator_probe_timeout',
               default=10,
               min=1,
               max=120,
               help='Seconds the KVM probe waits, once qemu has started, '
                    'for its guest to write to the console before KVM is '
                    'declared unusable (where KVM works, the firmware '
                    'writes within a fraction of a second).'),
    cfg.StrOpt('backend',
               default='direct',
               help='libguestfs backend. The timeouts are enforced by '
                    'killing the appliance\'s qemu, which only the '
                    '"direct" backend runs as a child of this process; '
                    'with another backend KVM is not probed either.'),
    cfg.ListOpt('backend_settings',
                default=[],
                help='libguestfs backend settings. Not needed where KVM is '
                     'missing or broken: see accelerator. "force_tcg" or '
                     '"force_kvm" here wins over accelerator. Empty: '
                     'libguestfs\'s own default, which honours '
                     'LIBGUESTFS_BACKEND_SETTINGS.'),
]


# Remote images (Glance's image data, http(s) URLs) read by ranges
# (qimgintrospect.remote).
remote_opts = [
    cfg.StrOpt('read_mode',
               default='auto',
               choices=[
                   ('auto', 'read by ranges where the server honours them '
                            '(its first answer says), else download the '
                            'image whole'),
                   ('ranges', 'read by ranges only; an image whose server '
                              'does not honour them fails with '
                              'remote-ranges-not-honoured'),
                   ('download', 'always download the image whole'),
               ],
               help='How the audit, `qimg-introspect glance` and '
                    '`qimg-introspect inspect URL` read a remote image. By '
                    'ranges, the header checks, qemu-img and the guest '
                    'appliance read only the blocks they need, through a '
                    'read-only NBD export (nbdkit) of the image; Glance '
                    'serves ranges for images in its filesystem and cinder '
                    'stores, not in rbd, swift, s3 or http stores.'),
    cfg.IntOpt('min_ranged_size_mb',
               default=64,
               min=0,
               help='With read_mode auto, an image whose size is known '
                    'beforehand (Glance\'s) and smaller than this many MiB '
                    'is downloaded whole: starting its NBD export costs '
                    'about half a second, what a download of that size '
                    'takes on a 1 Gbit/s network. 0: ranges for all.'),
    cfg.IntOpt('budget_mb',
               default=1024,
               min=1,
               help='Most MiB read by ranges from one image (at most its '
                    'size), reserved in the workspace quota while it is '
                    'inspected. qemu-img reads a header and a few tables '
                    '(a few MiB at most), the guest appliance the files it '
                    'inspects (tens of MiB): an image that makes them read '
                    'more fails with workspace-quota-exceeded.'),
    cfg.IntOpt('block_size_kb',
               default=64,
               min=4,
               max=4096,
               help='Size, in KiB, of the blocks fetched and cached: every '
                    'read fetches the blocks it touches that were not read '
                    'yet (neighbours together, 4 MiB at most in one '
                    'request). Smaller blocks fetch fewer bytes, larger '
                    'ones fewer requests.'),
    cfg.IntOpt('timeout',
               default=60,
               min=1,
               help='Seconds one HTTP request may wait to connect, and '
                    'then for each piece of its answer.'),
]


def register_opts(conf):
    """Register every option of the core on *conf*; safe to call twice."""
    conf.register_opts(qemu_img_opts, group=QEMU_IMG_GROUP)
    conf.register_opts(workspace_opts, group=WORKSPACE_GROUP)
    conf.register_opts(formats_opts, group=FORMATS_GROUP)
    conf.register_opts(import_opts, group=IMPORT_GROUP)
    conf.register_opts(audit_opts, group=AUDIT_GROUP)
    conf.register_opts(guest_opts, group=GUEST_GROUP)
    conf.register_opts(remote_opts, group=REMOTE_GROUP)


def list_opts():
    """Return the options for oslo-config-generator, by group."""
    return [
        (QEMU_IMG_GROUP, qemu_img_opts),
        (WORKSPACE_GROUP, workspace_opts),
        (FORMATS_GROUP, formats_opts),
        (IMPORT_GROUP, import_opts),
        (AUDIT_GROUP, audit_opts),
        (GUEST_GROUP, guest_opts),
        (REMOTE_GROUP, remote_opts),
    ]
