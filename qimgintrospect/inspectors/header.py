"""Detect the real format from the header and refuse unsafe images.

This runs before any other tool opens the image. It reads at most
:data:`HEADER_WINDOW` bytes from the start of the file and
:data:`TAIL_WINDOW` from its end, feeds them to every format inspector of
oslo.utils' ``format_inspector`` at once, plus the few this project adds
(:mod:`qimgintrospect.inspectors.formats`), and then:

1. decides the one format the bytes are (two non-raw matches is a refusal:
   one format hidden in another);
2. refuses it when it is not the declared format or not allowed;
3. asks qemu's own probes (:mod:`~qimgintrospect.inspectors.probe`) what
   qemu would read the file as, and refuses it when another format would
   win or tie: whoever lets qemu guess must get the format that was
   checked, whichever inspector matched (gpt and iso included);
4. runs this project's precise checks (they name the offending value: the
   backing file, the extent file; they check every table whole against
   the end of the file) and then oslo's named safety checks;
5. refuses a virtual size above the configured maximum.

:func:`inspect` returns :class:`Header`; :func:`confirm_copy` proves that a
workspace copy starts and ends with exactly the bytes that were checked, so
what qemu-img later reads is what passed.
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

import os

from oslo_log import log as logging
from oslo_utils.imageutils import format_inspector
from oslo_utils import units

from qimgintrospect import diskformats
from qimgintrospect import exception
from qimgintrospect.inspectors import formats
from qimgintrospect.inspectors import probe
from qimgintrospect import opts
from qimgintrospect import source

LOG = logging.getLogger(__name__)

HEADER_WINDOW = 16 * 1024 * 1024
TAIL_WINDOW = 64 * 1024
# Reads start small (most headers fit in the first chunk) and grow, so a
# format whose tables sit a few MiB in (VHDX) costs few inspector passes.
_FIRST_CHUNK = 64 * 1024
_MAX_CHUNK = 1024 * 1024

#: Inspector classes by name: oslo's, then ours (ours never replace).
INSPECTORS = dict(format_inspector.ALL_FORMATS, **formats.EXTRA_INSPECTORS)

# oslo safety-check name -> our error code.
_CHECK_CODES = {
    'backing_file': exception.BACKING_FILE,
    'data_file': exception.DATA_FILE,
    'unknown_features': exception.QCOW2_UNKNOWN_FEATURES,
    'descriptor': exception.VMDK_DESCRIPTOR,
    'footer': exception.VMDK_FOOTER,
    'mbr': exception.GPT_MBR,
    'banned': exception.FORMAT_NOT_ALLOWED,
}
# oslo checks that a reader of ours already made with qemu's own rule:
# oslo's qcow2 feature check knows bits 0-3 only, and would refuse
# extended L2 entries (bit 4), which qemu 7.2 reads.
_SUPERSEDED = {'qcow2': {'unknown_features'}}


class Header(object):
    """What the header says, once it has passed every check.

    :ivar format: Glance disk format the bytes are (``gpt`` reported as
        ``raw``).
    :ivar findings: raw findings for the normaliser (virtual size from the
        header, VMDK createType and adapter type, ...).
    :ivar warnings: non-fatal observations.
    """

    def __init__(self, disk_format, findings, warnings, head, tail, size):
        self.format = disk_format
        self.findings = findings
        self.warnings = warnings
        self._head = head
        self._tail = tail
        self._size = size


def inspect(fd, size, declared_format, conf):
    """Detect and check the format of the open file *fd* of *size* bytes.

    :param declared_format: Glance disk format the caller claims, or None
        to take the detected one (it must still be allowed).
    :returns: :class:`Header`.
    :raises ImageRefused: format-mismatch, format-ambiguous,
        format-not-allowed, and every header safety check.
    :raises InspectionFailed: image-empty, image-truncated, image-corrupt,
        read-error.
    """
    group = conf[opts.FORMATS_GROUP]
    allowed = set(group.allowed_formats)
    if declared_format is not None and declared_format not in allowed:
        raise exception.ImageRefused(
            exception.FORMAT_NOT_ALLOWED,
            'disk format %s is not allowed here (allowed: %s)'
            % (declared_format, ', '.join(sorted(allowed))))
    if size == 0:
        raise exception.InspectionFailed(exception.IMAGE_EMPTY,
                                         'the image file is empty')

    head, tail, live, gave_up = _feed(fd, size)
    verdict = probe.probe(head[0])
    inspector = _decide(live, gave_up, head[0], size, declared_format,
                        allowed, verdict)
    detected = _glance_name(inspector)
    if declared_format is not None and detected != declared_format:
        qemu = ''
        if verdict.driver not in ('raw', _qemu_probes_as(inspector)):
            qemu = ' (qemu, probing, would open it as %s: %s)' % (
                verdict.driver, verdict.winner.where)
        raise exception.ImageRefused(
            exception.FORMAT_MISMATCH,
            'declared %s but the header is %s%s'
            % (declared_format, detected, qemu))
    if detected not in allowed:
        raise exception.ImageRefused(
            exception.FORMAT_NOT_ALLOWED,
            'detected format %s is not allowed here (allowed: %s)'
            % (detected, ', '.join(sorted(allowed))))

    _refuse_rival(verdict, inspector, declared_format)

    reader = formats.reader_for(detected)
    findings = reader.check(inspector, fd, size, conf) if reader else {}
    warnings = findings.pop('warnings', [])
    warnings += _run_safety_checks(inspector, group)
    _refuse_unrecognised(verdict, inspector)
    if detected in ('raw', 'iso'):
        # qemu reads a raw disk (and an ISO) as large as its file, in whole
        # sectors; the raw and gpt inspectors only count the bytes they
        # were fed, the ISO one what the volume claims.
        findings.setdefault('virtual_size', formats.qemu_raw_size(size))
    findings.setdefault('virtual_size', inspector.virtual_size or None)
    _check_virtual_size(findings['virtual_size'], group)
    findings['format'] = detected
    return Header(detected, findings, warnings, head, tail, size)


def confirm_copy(path, header):
    """Prove the copy at *path* holds the bytes :func:`inspect` checked.

    :raises ImageRefused: image-changed-during-copy when the file changed
        while it was being copied.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        same = os.fstat(fd).st_size == header._size
        offset = 0
        for chunk in header._head:
            same = same and source.read_at(fd, len(chunk), offset) == chunk
            offset += len(chunk)
        tail_offset = header._size - len(header._tail)
        same = same and source.read_at(fd, len(header._tail),
                                       tail_offset) == header._tail
    finally:
        os.close(fd)
    if not same:
        raise exception.ImageRefused(
            exception.IMAGE_CHANGED,
            'the image changed while it was copied into the workspace; its '
            'checked header no longer matches the copy')


def check_virtual_size(virtual_size, conf):
    """Refuse *virtual_size* above the configured maximum."""
    _check_virtual_size(virtual_size, conf[opts.FORMATS_GROUP])


def _check_virtual_size(virtual_size, group):
    limit = group.max_virtual_size_gb * units.Gi
    if virtual_size and virtual_size > limit:
        raise exception.ImageRefused(
            exception.VIRTUAL_SIZE_TOO_LARGE,
            'virtual size %d bytes is above the %d GiB maximum'
            % (virtual_size, group.max_virtual_size_gb))


def _feed(fd, size):
    """Feed the header window and the tail to every inspector.

    An inspector stops getting chunks once it has been satisfied for a
    whole chunk (one more chunk lets it add the regions that its last
    region pointed to); end-of-file regions get the tail instead.

    :returns: (list of header chunks read, tail bytes read,
        {name: live inspector}, {name: why the inspector gave up}).
    """
    live = {name: cls() for name, cls in INSPECTORS.items()}
    gave_up = {}
    settled = set()
    chunks = []
    position = 0
    chunk_size = _FIRST_CHUNK
    while position < min(size, HEADER_WINDOW):
        length = min(chunk_size, HEADER_WINDOW - position)
        chunk = source.read_at(fd, length, position)
        if not chunk:
            break
        position += len(chunk)
        chunk_size = min(chunk_size * 2, _MAX_CHUNK)
        chunks.append(chunk)
        for name, inspector in list(live.items()):
            if name in settled:
                continue
            was_satisfied = _satisfied(inspector)
            try:
                inspector.eat_chunk(chunk)
            except Exception as err:
                # Not this format, or a header it cannot parse.
                gave_up[name] = err
                del live[name]
                continue
            if was_satisfied and _satisfied(inspector):
                settled.add(name)
        if settled.issuperset(n for n in live if n != 'raw'):
            break
    tail_start = max(size - TAIL_WINDOW, 0)
    tail = source.read_at(fd, size - tail_start, tail_start)
    for inspector in live.values():
        for region in _regions(inspector):
            if isinstance(region, format_inspector.EndCaptureRegion):
                region.capture(tail, size)
        inspector.finish()
    return chunks, tail, live, gave_up


def _regions(inspector):
    return [inspector.region(name) for name in inspector.context_info]


def _satisfied(inspector):
    """True when every region but the end-of-file ones is captured."""
    return all(r.complete for r in _regions(inspector)
               if not isinstance(r, format_inspector.EndCaptureRegion))


def _decide(live, gave_up, head, size, declared_format, allowed, verdict):
    """Return the one inspector the bytes match, or refuse.

    Raw is returned only when no format's magic is in the header: a file
    that carries a magic its inspector could not parse is never inspected
    as raw (qemu, probing, would still read it as that format).

    :param verdict: qemu's probe of the file (:func:`probe.probe`).
    """
    matches = [i for name, i in live.items()
               if name != 'raw' and i.complete and i.format_match]
    if len(matches) > 1:
        # A protective MBR is what the gpt inspector sees; it is normal in
        # front of an ISO (hybrid) or inside a fixed VHD, so it only counts
        # when nothing else matched.
        matches = [m for m in matches if m.NAME != 'gpt']
    if len(matches) > 1:
        raise exception.ImageRefused(
            exception.FORMAT_AMBIGUOUS,
            'the file matches several formats at once: %s; qemu, probing, '
            'would open it as %s (%s)'
            % (', '.join(sorted(_glance_name(m) for m in matches)),
               verdict.driver, verdict.winner.where))
    if matches:
        return matches[0]
    carried = formats.magic_formats(head)
    if carried:
        _refuse_unparsed(carried, gave_up, head, size, declared_format,
                         allowed, verdict)
    return live['raw']


def _refuse_unparsed(carried, gave_up, head, size, declared_format,
                     allowed, verdict):
    """Refuse or fail a file whose magic is there but whose header is not.

    The attack checks of the format run first (a VMDK descriptor outside
    the file is refused, not merely broken); then a format that is not
    allowed or not the declared one is refused; a VMDK text descriptor
    (which keeps its data in the files it names) is refused; only an
    allowed image of the declared (or no declared) format is reported as
    broken.
    """
    name = declared_format if declared_format in carried else carried[0]
    formats.explain_unparsed(name, head, size)
    qemu = ''
    if verdict.winner.probe.driver == diskformats.QEMU_DRIVERS.get(name):
        qemu = '; qemu, probing, would open it as %s: %s' % (
            verdict.winner.probe.driver, verdict.winner.where)
    text_descriptor = name == 'vmdk' and head[:4] not in (b'KDMV', b'COWD')
    reason = gave_up.get(name)
    if reason is None and text_descriptor:
        # oslo's inspector reads only text with a createType="..." line;
        # qemu reads any descriptor its probe accepts.
        reason = 'no createType="..." line this tool can read'
    elif reason is None and size > HEADER_WINDOW:
        # Not cut short: its structures point past what is ever read.
        reason = ('its header does not end within the first %d bytes'
                  % HEADER_WINDOW)
    why = ('its header cannot be parsed: %s' % reason if reason is not None
           else 'the file ends at byte %d, inside its header' % size)
    if name not in allowed:
        raise exception.ImageRefused(
            exception.FORMAT_NOT_ALLOWED,
            'the file carries the %s magic, a format not allowed here '
            '(allowed: %s); %s%s' % (name, ', '.join(sorted(allowed)), why,
                                     qemu))
    if declared_format is not None and declared_format != name:
        raise exception.ImageRefused(
            exception.FORMAT_MISMATCH,
            'declared %s but the file carries the %s magic (%s)%s'
            % (declared_format, name, why, qemu))
    if text_descriptor:
        raise exception.ImageRefused(
            exception.VMDK_EXTENT,
            'the file is a VMDK text descriptor this tool cannot read (%s)%s;'
            ' a descriptor keeps its data in the extent files it names'
            % (why, qemu))
    if reason is not None:
        raise exception.InspectionFailed(
            exception.IMAGE_CORRUPT,
            'the %s header cannot be parsed: %s' % (name, reason))
    raise exception.InspectionFailed(
        exception.IMAGE_TRUNCATED,
        'the file ends at byte %d, inside its %s header' % (size, name))


def _glance_name(inspector):
    return 'raw' if inspector.NAME == 'gpt' else inspector.NAME


def _qemu_probes_as(inspector):
    """The qemu driver qemu's probe should pick for what *inspector* saw."""
    return getattr(inspector, 'QEMU_PROBES_AS', None) or (
        diskformats.QEMU_DRIVERS[_glance_name(inspector)])


def _refuse_rival(verdict, inspector, declared_format):
    """Refuse a file another format would win or tie qemu's probe for.

    A consumer that lets qemu guess (``qemu-img`` without ``-f``, an older
    Nova) would open it as that other format, with checks this tool never
    ran: a VMDK descriptor in an MBR's boot code makes qemu read the
    extent files it names. When qemu's probe falls back to raw for a
    format it should recognise, nothing else claims the file; that is
    left to :func:`_refuse_unrecognised`, after the format's own checks.

    :raises ImageRefused: format-mismatch when the file is raw to this
        tool and declared raw; qcow2-version for a qcow2 header of
        version 1 (qemu's qcow driver); format-ambiguous otherwise.
    """
    expected = _qemu_probes_as(inspector)
    winner = verdict.winner
    rivals = verdict.rivals
    if winner.probe.driver == 'raw' or (winner.probe.driver == expected
                                        and not rivals):
        return
    detected = _glance_name(inspector)
    claims = '; '.join('%s (%s)' % (m.probe.driver, m.where)
                       for m in [winner] + rivals)
    if rivals:
        raise exception.ImageRefused(
            exception.FORMAT_AMBIGUOUS,
            'qemu, probing this %s file for its format, finds several that '
            'score %d: %s; it would open it as %s'
            % (detected, winner.probe.score, claims, winner.probe.driver))
    if expected == 'qcow2' and winner.probe.driver == 'qcow':
        raise exception.ImageRefused(
            exception.QCOW2_VERSION,
            'qcow2 version 1 is not 2 or 3: qemu reads it as a qcow '
            '(version 1) image (%s)' % winner.where)
    code = (exception.FORMAT_MISMATCH
            if detected == declared_format == 'raw'
            else exception.FORMAT_AMBIGUOUS)
    raise exception.ImageRefused(
        code,
        '%s, but qemu, probing it for its format, would open it as %s: %s'
        % ('declared raw' if code == exception.FORMAT_MISMATCH
           else 'the file is %s' % detected,
           winner.probe.driver, winner.where))


def _refuse_unrecognised(verdict, inspector):
    """Refuse a header that qemu's own probe for its format rejects.

    Reached only when the format's checks passed: qemu, probing, would
    read the file as raw, not as what was checked.

    :raises ImageRefused: format-mismatch.
    """
    expected = _qemu_probes_as(inspector)
    if verdict.winner.probe.driver == expected:
        return
    raise exception.ImageRefused(
        exception.FORMAT_MISMATCH,
        'the file is %s to this tool, but qemu\'s %s probe does not '
        'recognise its header: qemu, probing, would read it as %s'
        % (_glance_name(inspector), expected, verdict.winner.probe.driver))


def _run_safety_checks(inspector, group):
    """Run oslo's named checks; map the first failure to our code."""
    try:
        inspector.safety_check()
    except format_inspector.SafetyCheckFailed as err:
        failures = {name: failure for name, failure in err.failures.items()
                    if name not in _SUPERSEDED.get(inspector.NAME, ())}
        nonfatal = set(group.gpt_safety_checks_nonfatal)
        fatal = {name: failure for name, failure in failures.items()
                 if not (inspector.NAME == 'gpt' and name in nonfatal)}
        if not fatal:
            return ['non-fatal %s safety check %r failed: %s'
                    % (inspector.NAME, name, failure)
                    for name, failure in sorted(failures.items())]
        name, failure = sorted(fatal.items())[0]
        raise exception.ImageRefused(
            _CHECK_CODES.get(name, exception.FORMAT_CHECK_FAILED),
            '%s safety check %r failed: %s'
            % (_glance_name(inspector), name, failure))
    except format_inspector.ImageFormatError as err:
        raise exception.InspectionFailed(
            exception.IMAGE_CORRUPT,
            'the %s header cannot be parsed: %s'
            % (_glance_name(inspector), err))
    return []
