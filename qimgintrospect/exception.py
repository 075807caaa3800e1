"""The one error type of qimgintrospect, its categories and its codes.

Every failure the core reports is an :class:`IntrospectionError` with

* ``code``: a stable kebab-case string naming the check or step that failed
  (scripts and the Glance plugin match on it; it never changes meaning);
* ``exit_code``: what the CLI exits with: 2 usage, 3 image refused as
  unsafe or not what it claims, 4 inspection failed;
* ``message``: one sentence for a person, naming the offending value.

Every code is declared once in :data:`CODES` with the category that raises
it, so documentation and tests can list them all.
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

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_FAILED = 4

#: code -> (exit code, one-line description). Filled by _declare() below.
CODES = {}


class IntrospectionError(Exception):
    """Base of every error the core raises.

    :param code: one of :data:`CODES`; its category must match the class.
    :param message: human-readable reason, naming the offending value.
    """

    exit_code = EXIT_FAILED

    def __init__(self, code, message):
        if CODES.get(code, (None,))[0] != self.exit_code:
            raise ValueError('undeclared error code %r for %s'
                             % (code, type(self).__name__))
        super().__init__(message)
        self.code = code
        self.message = message

    def to_dict(self):
        """The error as the CLI's and the plugin's JSON ``error`` object."""
        return {'code': self.code, 'message': self.message}


class UsageError(IntrospectionError):
    """The request itself is wrong (missing file, unknown format name)."""

    exit_code = EXIT_USAGE


class ImageRefused(IntrospectionError):
    """The image is unsafe or not what it claims; it was not inspected."""

    exit_code = EXIT_REFUSED


class InspectionFailed(IntrospectionError):
    """The image could not be inspected: broken image, tool or workspace."""

    exit_code = EXIT_FAILED


def _declare(category, code, description):
    CODES[code] = (category.exit_code, description)
    return code


# Usage.
FILE_NOT_FOUND = _declare(
    UsageError, 'file-not-found', 'The image path does not exist.')
UNKNOWN_FORMAT_NAME = _declare(
    UsageError, 'unknown-format-name',
    'The declared disk format is not a Glance disk format.')

# Refusals: the input is not a plain file.
SYMLINK = _declare(
    ImageRefused, 'symlink',
    'The image path is a symbolic link; links are never followed.')
NOT_REGULAR_FILE = _declare(
    ImageRefused, 'not-a-regular-file',
    'The image path is a directory, FIFO, socket or device node.')

# Refusals: the format is not what it claims or not wanted.
FORMAT_MISMATCH = _declare(
    ImageRefused, 'format-mismatch',
    'The detected format differs from the declared one.')
FORMAT_AMBIGUOUS = _declare(
    ImageRefused, 'format-ambiguous',
    'The file matches more than one format (one hidden inside another).')
FORMAT_NOT_ALLOWED = _declare(
    ImageRefused, 'format-not-allowed',
    'The format is not in [introspection_formats] allowed_formats.')
FORMAT_CHECK_FAILED = _declare(
    ImageRefused, 'format-check-failed',
    'A safety check of the format inspector failed (the message names it).')
IMAGE_CHANGED = _declare(
    ImageRefused, 'image-changed-during-copy',
    'The file changed while it was copied into the workspace, so the copy '
    'is not what passed the header checks.')
VIRTUAL_SIZE_TOO_LARGE = _declare(
    ImageRefused, 'virtual-size-too-large',
    'The virtual size is above [introspection_formats] max_virtual_size_gb.')

# Refusals: the image reaches outside itself.
BACKING_FILE = _declare(
    ImageRefused, 'backing-file',
    'The header names a backing (parent) file: a qcow2 backing file, a '
    'VMDK parentFileNameHint or a differencing VHD.')
DATA_FILE = _declare(
    ImageRefused, 'data-file',
    'The qcow2 image keeps its data in an external data file.')
QCOW2_VERSION = _declare(
    ImageRefused, 'qcow2-version',
    'The qcow2 version is not 2 or 3.')
QCOW2_UNKNOWN_FEATURES = _declare(
    ImageRefused, 'qcow2-unknown-features',
    'The qcow2 header sets incompatible feature bits this tool does not '
    'know.')
VMDK_SUBFORMAT = _declare(
    ImageRefused, 'vmdk-subformat-not-allowed',
    'The VMDK createType is not in [introspection_formats] '
    'vmdk_allowed_types or keeps its data in other files.')
VMDK_EXTENT = _declare(
    ImageRefused, 'vmdk-external-extent',
    'A VMDK extent is a file other than the image itself.')
VMDK_DESCRIPTOR = _declare(
    ImageRefused, 'vmdk-descriptor-invalid',
    'The VMDK descriptor is missing, misplaced or has lines this tool does '
    'not understand.')
VMDK_FOOTER = _declare(
    ImageRefused, 'vmdk-footer-invalid',
    'The streamOptimized footer disagrees with the header.')
GPT_MBR = _declare(
    ImageRefused, 'gpt-mbr-invalid',
    'The protective MBR of a GPT disk is inconsistent.')
IMAGE_ENCRYPTED = _declare(
    ImageRefused, 'image-encrypted',
    'The qcow2 image is encrypted: LUKS unless [introspection_formats] '
    'allow_encrypted is set, legacy AES always.')
QEMU_IMG_DISAGREES = _declare(
    ImageRefused, 'qemu-img-format-disagrees',
    'qemu-img, with the format forced, reports another format or a '
    'different virtual size than the header.')

# Failures: the image is broken.
IMAGE_EMPTY = _declare(
    InspectionFailed, 'image-empty', 'The image file is empty.')
IMAGE_TRUNCATED = _declare(
    InspectionFailed, 'image-truncated',
    'The image ends before its header or tables do.')
IMAGE_CORRUPT = _declare(
    InspectionFailed, 'image-corrupt',
    'The header of the declared format cannot be parsed.')

# Failures: qemu-img.
QEMU_IMG_NOT_FOUND = _declare(
    InspectionFailed, 'qemu-img-not-found',
    'qemu-img (or prlimit) is not installed or not executable.')
QEMU_IMG_TIMEOUT = _declare(
    InspectionFailed, 'qemu-img-timeout',
    'qemu-img ran past [introspection_qemu_img] timeout and was killed.')
QEMU_IMG_LIMIT = _declare(
    InspectionFailed, 'qemu-img-limit-exceeded',
    'qemu-img reached its CPU-time or address-space cap and was stopped.')
QEMU_IMG_FAILED = _declare(
    InspectionFailed, 'qemu-img-failed',
    'qemu-img exited with an error (its message is included).')
QEMU_IMG_BAD_OUTPUT = _declare(
    InspectionFailed, 'qemu-img-bad-output',
    'qemu-img printed something that is not the expected JSON.')

# Failures: the workspace.
WORKSPACE_QUOTA = _declare(
    InspectionFailed, 'workspace-quota-exceeded',
    'The copy would not fit in [introspection_workspace] quota_mb.')
WORKSPACE_NO_SPACE = _declare(
    InspectionFailed, 'workspace-no-space',
    'The workspace filesystem has not enough free space for the copy.')
WORKSPACE_BUSY = _declare(
    InspectionFailed, 'workspace-busy',
    'All max_workers slots stayed busy for slot_wait_timeout seconds.')
WORKSPACE_UNUSABLE = _declare(
    InspectionFailed, 'workspace-unusable',
    'The workspace directory cannot be created or is not private.')
INTERNAL_ERROR = _declare(
    InspectionFailed, 'internal-error',
    'An unexpected error (a bug); the log has the traceback.')
READ_ERROR = _declare(
    InspectionFailed, 'read-error',
    'The image could not be read (I/O error or permission denied).')

# Glance front ends (``glance``, ``audit``, the import plugin).
GLANCE_AUTH = _declare(
    UsageError, 'glance-auth-failed',
    'No usable credentials for Glance, or Glance refused them.')
IMAGE_NOT_FOUND = _declare(
    UsageError, 'image-not-found',
    'No Glance image has this id (or it is not visible to these '
    'credentials).')
GLANCE_BAD_REQUEST = _declare(
    UsageError, 'glance-bad-request',
    'Glance rejected a request as malformed (a filter value, for example).')
IMAGE_HAS_NO_DATA = _declare(
    UsageError, 'image-has-no-data',
    'The Glance image is not active, so it has no data to inspect.')
IMAGE_NOT_DISK = _declare(
    UsageError, 'not-a-disk-image',
    'The Glance image\'s container or disk format is not one this tool '
    'inspects (ami, aki, ari, ova, docker, ...).')
STATE_FILE_UNUSABLE = _declare(
    UsageError, 'state-file-unusable',
    'The audit state file or database cannot be created, opened, read or '
    'brought to this version\'s schema.')
STATE_UNAVAILABLE = _declare(
    InspectionFailed, 'state-database-unavailable',
    'The audit state database did not answer, even after retries; an '
    'outcome that could not be recorded is not written to Glance either.')
COORDINATION_URL_INVALID = _declare(
    UsageError, 'coordination-url-invalid',
    'The coordination URL names no tooz driver, or one whose client '
    'library is not installed.')
COORDINATION_UNAVAILABLE = _declare(
    InspectionFailed, 'coordination-unavailable',
    'The coordination service did not answer while the worker joined the '
    'audit group.')
GLANCE_UNREACHABLE = _declare(
    InspectionFailed, 'glance-unreachable',
    'The Glance API could not be reached or answered with a server error.')
DOWNLOAD_FAILED = _declare(
    InspectionFailed, 'download-failed',
    'The image data could not be downloaded whole, or failed its checksum.')
GLANCE_UPDATE_FAILED = _declare(
    InspectionFailed, 'glance-update-failed',
    'Glance refused to store the properties (forbidden or conflicting).')

# Failures: guest OS detection (libguestfs, inspectors/guest.py).
GUEST_UNAVAILABLE = _declare(
    InspectionFailed, 'guest-unavailable',
    'Guest OS detection is enabled but libguestfs is not installed or its '
    'appliance cannot start on this host (an appliance without any image '
    'fails too). A warning unless [introspection_guest] '
    'fail_if_unavailable is set.')
GUEST_TIMEOUT = _declare(
    InspectionFailed, 'guest-timeout',
    'The libguestfs appliance inspecting this image ran past '
    '[introspection_guest] launch_timeout or inspect_timeout and was '
    'killed.')
GUEST_APPLIANCE_FAILED = _declare(
    InspectionFailed, 'guest-appliance-failed',
    'The libguestfs appliance died or failed to start with this image '
    'attached, while one without it starts.')

# Refusals: the guest cannot boot as an instance (a warning unless
# [introspection_guest] refuse_unbootable; inspectors/guest/probes/
# unbootable.py).
GUEST_HIBERNATED = _declare(
    ImageRefused, 'guest-hibernated',
    'Windows is hibernated (hiberfil.sys holds a hibernation image, '
    'Fast Startup\'s included): it would resume a session made for other '
    'hardware. A warning unless [introspection_guest] refuse_unbootable '
    'is set.')
GUEST_BITLOCKER = _declare(
    ImageRefused, 'guest-bitlocker',
    'The image holds a BitLocker volume, whose key a new instance does '
    'not have. A warning unless [introspection_guest] refuse_unbootable '
    'is set.')
GUEST_FAST_STARTUP = _declare(
    ImageRefused, 'guest-fast-startup',
    'Windows Fast Startup is on: the image boots, but an instance\'s '
    'shutdown hibernates its kernel session. Always a warning, never a '
    'refusal.')


class QemuImgNotFound(InspectionFailed):
    def __init__(self, message):
        super().__init__(QEMU_IMG_NOT_FOUND, message)


class QemuImgTimeout(InspectionFailed):
    def __init__(self, message):
        super().__init__(QEMU_IMG_TIMEOUT, message)


class QemuImgLimitExceeded(InspectionFailed):
    def __init__(self, message):
        super().__init__(QEMU_IMG_LIMIT, message)


class QemuImgFailed(InspectionFailed):
    def __init__(self, message):
        super().__init__(QEMU_IMG_FAILED, message)


class QemuImgFoundImageBroken(QemuImgFailed):
    """qemu-img failed and its message says the image is cut or corrupt.

    Still a :class:`QemuImgFailed` (whoever catches that still does), but
    its code is image-truncated or image-corrupt: the image is to blame,
    not the tool.
    """

    def __init__(self, code, message):
        InspectionFailed.__init__(self, code, message)


class QemuImgBadOutput(InspectionFailed):
    def __init__(self, message):
        super().__init__(QEMU_IMG_BAD_OUTPUT, message)


# Remote images read by ranges (qimgintrospect/remote/). A server that
# lies about the image is refused (exit 3) with a code naming the lie; one
# that cannot serve ranges raises RangesNotHonoured, the caller's signal
# to download the image whole instead.
REMOTE_SIZE_MISMATCH = _declare(
    ImageRefused, 'remote-size-mismatch',
    'The server gave another total length for the image than the size '
    'known for it (Glance\'s image size, or its own first answer).')
REMOTE_RANGE_MISMATCH = _declare(
    ImageRefused, 'remote-range-mismatch',
    'A partial answer (206) covers another range than the one asked, or '
    'does not say which (no, or an unreadable, Content-Range).')
REMOTE_BODY_TOO_LONG = _declare(
    ImageRefused, 'remote-body-too-long',
    'The server sent (or announced) more bytes than the range asked.')
REMOTE_BODY_TOO_SHORT = _declare(
    ImageRefused, 'remote-body-too-short',
    'The server sent (or announced) fewer bytes than the range asked.')
REMOTE_REDIRECT = _declare(
    ImageRefused, 'remote-redirect-refused',
    'The server redirected the request to another host, port or scheme.')
REMOTE_CONTENT_ENCODED = _declare(
    ImageRefused, 'remote-content-encoded',
    'The server sent the range compressed (a Content-Encoding), so its '
    'bytes are not the image\'s bytes at that offset.')
REMOTE_RANGES_NOT_HONOURED = _declare(
    InspectionFailed, 'remote-ranges-not-honoured',
    'The server answered a ranged request with the whole image (200) or '
    'refused it (a Glance store that cannot read at an offset answers '
    '400): the image can only be read by a whole download.')
REMOTE_NOT_FOUND = _declare(
    UsageError, 'remote-not-found',
    'The server has no image at this URL (404 or 410).')
REMOTE_AUTH = _declare(
    UsageError, 'remote-auth-failed',
    'The server refused the credentials (401 or 403).')
REMOTE_HTTP_ERROR = _declare(
    InspectionFailed, 'remote-http-error',
    'The server answered with an error or a status this reader does not '
    'expect (5xx, another 4xx, 204, a redirect without a location).')
REMOTE_UNREACHABLE = _declare(
    InspectionFailed, 'remote-unreachable',
    'The server could not be reached, or the connection failed or timed '
    'out.')
REMOTE_EXPORT_FAILED = _declare(
    InspectionFailed, 'remote-export-failed',
    'The NBD export of the remote image (nbdkit) could not start or died.')


class RangesNotHonoured(InspectionFailed):
    """The server cannot serve ranges: download the image whole instead.

    Not a lie: a store that cannot read at an offset, or a web server with
    ranges turned off. Whoever can fall back catches this type.
    """

    def __init__(self, message):
        super().__init__(REMOTE_RANGES_NOT_HONOURED, message)


def error_from_code(code, message):
    """Rebuild the error a code names (one recorded by another process).

    :returns: an :class:`IntrospectionError` of the code's category, a
        :class:`RangesNotHonoured` for its code.
    :raises ValueError: *code* is not declared.
    """
    if code == REMOTE_RANGES_NOT_HONOURED:
        return RangesNotHonoured(message)
    category = {cls.exit_code: cls for cls in
                (UsageError, ImageRefused, InspectionFailed)}
    if code not in CODES:
        raise ValueError('undeclared error code %r' % code)
    return category[CODES[code][0]](code, message)
