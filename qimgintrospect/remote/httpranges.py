"""Byte ranges of one remote image over HTTP, none of them taken on trust.

Every byte string :class:`RangeReader` returns comes from a ``206``
answer to a single-range GET whose ``Content-Range`` is the range asked,
whose total is the image's size, whose body is exactly that long and not
content-coded, and whose validators (``ETag``, ``Last-Modified``,
``Content-MD5``) are those of the first answer. Anything else raises an
:class:`~qimgintrospect.exception.IntrospectionError` naming it:

* a lie (refused, exit 3): ``remote-size-mismatch``,
  ``remote-range-mismatch``, ``remote-body-too-long``,
  ``remote-body-too-short``, ``remote-content-encoded``,
  ``remote-redirect-refused`` (a redirect to another host, port or scheme;
  same-origin redirects are followed, five at most),
  ``image-changed-during-copy`` (the validators changed);
* ranges not served: :class:`~qimgintrospect.exception.RangesNotHonoured`
  for a ``200`` (the whole body) to a ranged request, or a ``400``/``501``
  to the first one. The caller falls back to a whole download; the body
  of that ``200`` is never read;
* the rest: ``remote-auth-failed`` (401, 403), ``remote-not-found``
  (404, 410), ``remote-http-error``, ``remote-unreachable``.

What this relies on in Glance (glance/api/v2/image_data.py, ``download``
of the response serializer, and glance_store's ``capabilities.check``):
``GET /v2/images/{id}/file`` with ``Range: bytes=a-b`` or a suffix
``bytes=-n`` answers ``206`` with ``Content-Range: bytes a-b/size``
(``b`` clipped to the image's end) when the image's store can read at an
offset (``READ_RANDOM``: the filesystem and cinder stores); a store that
cannot (http, rbd, swift, s3) raises ``StoreRandomGetNotSupported``,
which Glance answers with ``400``. A list of ranges is ``400`` too, so
only single ranges are ever asked. There is no ``HEAD`` on that URL and
no ``Accept-Ranges`` header: the size is Glance's image ``size`` when the
caller knows it, else the total of the first answer's ``Content-Range``.

Credentials are headers from an *auth* object (:class:`StaticHeaders`,
:class:`KeystoneHeaders`, :class:`HeadersFile`); a ``401`` makes the
reader ask it for fresh ones and try once more. The HTTP transport is
always this module's own ``requests`` session, so the nbdkit plugin,
which rebuilds a reader from :meth:`RangeReader.spec` in another
process, sends exactly the same requests.
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

import json
import os
import re
import tempfile
import urllib.parse

import requests

from qimgintrospect import exception

#: (connect, read) timeouts of one request, in seconds.
DEFAULT_TIMEOUT = (10.0, 60.0)
MAX_REDIRECTS = 5
#: Headers that must not change between two answers about one image.
VALIDATORS = ('ETag', 'Last-Modified', 'Content-MD5')

_REDIRECTS = (301, 302, 303, 307, 308)
_CONTENT_RANGE = re.compile(r'^\s*bytes\s+(\d+)-(\d+)/(\d+)\s*$', re.I)
_UNSATISFIED_RANGE = re.compile(r'^\s*bytes\s+\*/(\d+)\s*$', re.I)
_DEFAULT_PORTS = {'http': 80, 'https': 443}
# Headers requests sends by itself: not credentials.
_TRANSPORT_HEADERS = {'user-agent', 'accept-encoding', 'accept', 'connection'}
_READ_CHUNK = 1024 * 1024
_ERROR_SNIPPET = 512


class StaticHeaders(object):
    """Credentials that never change (a web server's, a fixed token)."""

    renews = False

    def __init__(self, headers):
        self._headers = dict(headers or {})

    def headers(self):
        return dict(self._headers)

    def refresh(self):
        """Nothing to renew: False (a 401 stands)."""
        return False


class KeystoneHeaders(object):
    """The auth headers of a keystoneauth Session or Adapter.

    An Adapter (python-glanceclient's ``SessionClient`` is one) lends its
    session's headers, with its own auth plugin when it has one.
    keystoneauth renews a token that expires within two minutes whenever
    its headers are asked for, so :meth:`headers` is always good for a
    while; :meth:`refresh` drops the token after a 401.
    """

    renews = True

    def __init__(self, session):
        self._session = _keystone_session(session)
        self._plugin = None if self._session is session else getattr(
            session, 'auth', None)

    def headers(self):
        return dict(self._session.get_auth_headers(auth=self._plugin) or {})

    def refresh(self):
        """Get a new token; True when the headers changed."""
        before = self.headers()
        self._session.invalidate(auth=self._plugin)
        return self.headers() != before


class HeadersFile(object):
    """Credentials another process keeps up to date in a file.

    The nbdkit plugin reads its headers this way: a token never travels
    on a command line or in the environment, and the parent rewrites the
    file (atomically, :func:`write_headers`) when its session renews the
    token. The file is read again whenever it was replaced.
    """

    renews = False

    def __init__(self, path):
        self.path = path
        self._seen = None
        self._headers = {}

    def headers(self):
        st = os.stat(self.path)
        if (st.st_ino, st.st_mtime_ns) != self._seen:
            with open(self.path) as f:
                self._headers = json.load(f)['headers']
            self._seen = (st.st_ino, st.st_mtime_ns)
        return dict(self._headers)

    def refresh(self):
        """True when the file holds other headers than those last sent."""
        before = dict(self._headers)
        return self.headers() != before


def write_headers(path, headers):
    """Write *headers* to *path* (mode 0600), replacing it atomically."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.headers-')
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump({'headers': headers}, f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def credentials(session):
    """The auth object for *session*, and its TLS settings.

    :param session: None (no credentials), a mapping of headers, a
        keystoneauth Session or Adapter, or a requests Session (its own
        headers, minus requests' defaults, are the credentials).
    :returns: (auth or None, {'verify': ..., 'cert': ...} as the session
        has them).
    """
    if session is None:
        return None, {}
    ks_session = _keystone_session(session)
    if ks_session is not None:
        return KeystoneHeaders(session), {
            'verify': getattr(ks_session, 'verify', True),
            'cert': getattr(ks_session, 'cert', None)}
    if isinstance(session, requests.Session):
        return StaticHeaders(
            {k: v for k, v in session.headers.items()
             if k.lower() not in _TRANSPORT_HEADERS}), {
            'verify': session.verify, 'cert': session.cert}
    return StaticHeaders(session), {}


class RangeReader(object):
    """Checked ranged reads of the image at *url*.

    :param auth: None or an object with ``headers()`` and ``refresh()``
        (see :func:`credentials`).
    :param size: the image's size when known (Glance's ``size``); every
        answer's total must equal it. None: the first answer sets it.
    :param validators: the validators an earlier reader of this image saw
        (the plugin gets the parent's), else the first answer's.
    :ivar requests: requests sent (redirect hops included).
    :ivar bytes_fetched: body bytes received in checked answers.
    """

    def __init__(self, url, auth=None, size=None, timeout=DEFAULT_TIMEOUT,
                 verify=True, cert=None, validators=None):
        if urllib.parse.urlsplit(url).scheme.lower() not in _DEFAULT_PORTS:
            raise ValueError('%s is not an http or https URL' % url)
        self.url = url
        self.size = size
        self.requests = 0
        self.bytes_fetched = 0
        self._auth = auth
        self._timeout = tuple(timeout)
        self._verify = verify
        self._cert = tuple(cert) if isinstance(cert, list) else cert
        self._validators = dict(validators) if validators else None
        self._http = requests.Session()

    @classmethod
    def for_session(cls, url, session, size=None, **kwargs):
        """A reader whose credentials and TLS settings are *session*'s."""
        auth, tls = credentials(session)
        tls.update(kwargs)
        return cls(url, auth=auth, size=size, **tls)

    @classmethod
    def from_spec(cls, spec, auth=None):
        """The reader :meth:`spec` describes (in another process)."""
        return cls(spec['url'], auth=auth, size=spec['size'],
                   timeout=spec['timeout'], verify=spec['verify'],
                   cert=spec['cert'], validators=spec['validators'])

    def spec(self):
        """What another process needs to read as this reader does.

        JSON-serialisable; holds no credentials.
        """
        return {'url': self.url, 'size': self.size,
                'timeout': list(self._timeout), 'verify': self._verify,
                'cert': self._cert, 'validators': self._validators}

    def close(self):
        self._http.close()

    def probe(self, length):
        """Read the first *length* bytes, learning whether ranges work.

        The first request for an image: its answer says whether the
        server honours ranges and, when the size is not known, what it
        is. An image shorter than *length* is read whole (its size is
        then known: an empty image gives ``b''``).

        :raises RangesNotHonoured: a 200, or a 400/501, to this request.
        :raises IntrospectionError: as :meth:`read`.
        """
        def want(total):
            return 0, min(length, total) - 1
        return self._fetch('bytes=0-%d' % (length - 1), want, probing=True)

    def read(self, offset, length):
        """Return exactly the *length* bytes at *offset* of the image.

        :raises ValueError: the range is not inside the image (its size
            must be known: given, or learnt by :meth:`probe`).
        :raises RangesNotHonoured: the server answered 200.
        :raises ImageRefused: remote-size-mismatch, remote-range-mismatch,
            remote-body-too-long, remote-body-too-short,
            remote-content-encoded, remote-redirect-refused,
            image-changed-during-copy.
        :raises UsageError: remote-auth-failed, remote-not-found.
        :raises InspectionFailed: remote-http-error, remote-unreachable.
        """
        if self.size is None or length <= 0 or offset < 0 or (
                offset + length > self.size):
            raise ValueError('range %d+%d is not inside an image of %s '
                             'bytes' % (offset, length, self.size))
        last = offset + length - 1

        def want(total):
            return offset, last
        return self._fetch('bytes=%d-%d' % (offset, last), want)

    def read_tail(self, length):
        """Return (offset, bytes) of the last *length* bytes (suffix range).

        :raises: as :meth:`read`.
        """
        def want(total):
            return max(total - length, 0), total - 1
        data = self._fetch('bytes=-%d' % length, want)
        return self.size - len(data), data

    def whole(self):
        """Ask for the whole image (the fallback); return (size, chunks).

        One GET without a ``Range``, for a server that does not honour
        ranges. Its answer is checked as a ranged one is: ``200``, not
        content-coded, a ``Content-Length`` that is the image's size (the
        size known, else it sets it), the validators of earlier answers.
        *chunks* yields the body and raises once it is longer or shorter
        than that length; it closes the answer when it ends.

        :raises ImageRefused: remote-size-mismatch, remote-content-encoded,
            remote-redirect-refused, image-changed-during-copy (and, from
            *chunks*, remote-body-too-long, remote-body-too-short).
        :raises UsageError: remote-auth-failed, remote-not-found.
        :raises InspectionFailed: remote-http-error (another status, no
            Content-Length), remote-unreachable.
        """
        response = self._follow(None)
        try:
            size = self._accept_whole(response)
        except BaseException:
            response.close()
            raise
        return size, self._whole_body(response, size)

    def _accept_whole(self, response):
        status = response.status_code
        headers = response.headers
        if status != 200:
            raise self._status_error(status, 'a download',
                                     _snippet(response))
        encoding = headers.get('Content-Encoding', 'identity').strip()
        if encoding.lower() != 'identity':
            raise exception.ImageRefused(
                exception.REMOTE_CONTENT_ENCODED,
                '%s sent the image encoded with %s' % (self.url, encoding))
        try:
            length = int(headers['Content-Length'])
        except (KeyError, ValueError):
            raise exception.InspectionFailed(
                exception.REMOTE_HTTP_ERROR,
                '%s sent the image without a Content-Length (%r): its size '
                'must be known before it is written to the workspace'
                % (self.url, headers.get('Content-Length')))
        self._check_total(length, 'the whole image')
        self._check_validators(headers)
        return length

    def _whole_body(self, response, size):
        received = 0
        try:
            for chunk in response.iter_content(_READ_CHUNK):
                received += len(chunk)
                if received > size:
                    raise exception.ImageRefused(
                        exception.REMOTE_BODY_TOO_LONG,
                        '%s sent more than the %d bytes of the image'
                        % (self.url, size))
                self.bytes_fetched += len(chunk)
                yield chunk
        except requests.RequestException as err:
            raise exception.ImageRefused(
                exception.REMOTE_BODY_TOO_SHORT,
                '%s ended the image after %d of its %d bytes: %s'
                % (self.url, received, size, err))
        finally:
            response.close()
        if received < size:
            raise exception.ImageRefused(
                exception.REMOTE_BODY_TOO_SHORT,
                '%s sent %d of the %d bytes of the image'
                % (self.url, received, size))

    def _fetch(self, range_value, want, probing=False):
        response = self._follow(range_value)
        try:
            return self._accept(response, range_value, want, probing)
        finally:
            response.close()

    def _follow(self, range_value):
        """The first answer that is not a redirect (same origin only)."""
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send(url, range_value)
            if response.status_code not in _REDIRECTS:
                return response
            try:
                url = self._redirect_target(url, response)
            finally:
                response.close()
        raise exception.InspectionFailed(
            exception.REMOTE_HTTP_ERROR,
            '%s: more than %d redirects' % (self.url, MAX_REDIRECTS))

    def _send(self, url, range_value):
        retried = False
        while True:
            headers = self._credentials('headers')
            headers['Accept-Encoding'] = 'identity'
            if range_value is not None:
                headers['Range'] = range_value
            self.requests += 1
            try:
                response = self._http.get(
                    url, headers=headers, stream=True, allow_redirects=False,
                    timeout=self._timeout, verify=self._verify,
                    cert=self._cert)
            except requests.RequestException as err:
                raise exception.InspectionFailed(
                    exception.REMOTE_UNREACHABLE,
                    'GET %s (%s): %s' % (url, range_value, err))
            if (response.status_code == 401 and not retried
                    and self._auth and self._credentials('refresh')):
                response.close()
                retried = True
                continue
            return response

    def _credentials(self, call):
        """``auth.headers()`` or ``auth.refresh()``, failures translated."""
        if self._auth is None:
            return {}
        try:
            return getattr(self._auth, call)()
        except Exception as err:
            # keystoneauth's errors (Keystone refused or unreachable), or
            # the plugin's credentials file gone.
            raise exception.UsageError(
                exception.REMOTE_AUTH,
                'cannot get credentials for %s: %s: %s'
                % (self.url, type(err).__name__, err))

    def _redirect_target(self, url, response):
        location = response.headers.get('Location')
        if not location:
            raise exception.InspectionFailed(
                exception.REMOTE_HTTP_ERROR,
                '%s answered %d without a Location'
                % (url, response.status_code))
        target = urllib.parse.urljoin(url, location)
        if _origin(target) != _origin(url):
            raise exception.ImageRefused(
                exception.REMOTE_REDIRECT,
                '%s redirected to %s, another host, port or scheme; '
                'redirects are followed only to the same origin'
                % (url, target))
        return target

    def _accept(self, response, range_value, want, probing):
        status = response.status_code
        if status == 206:
            return self._accept_partial(response, range_value, want)
        if status == 200:
            raise exception.RangesNotHonoured(
                '%s answered a ranged request (%s) with the whole image '
                '(200; Accept-Ranges: %s)'
                % (self.url, range_value,
                   response.headers.get('Accept-Ranges', 'not sent')))
        if status == 416:
            return self._accept_unsatisfiable(response, range_value, probing)
        detail = _snippet(response)
        if probing and status in (400, 501):
            # What Glance answers when the image's store cannot read at
            # an offset (StoreRandomGetNotSupported).
            raise exception.RangesNotHonoured(
                '%s refused a ranged request (%s) with %d: %s'
                % (self.url, range_value, status, detail))
        raise self._status_error(status, 'a ranged request (%s)'
                                 % range_value, detail)

    def _status_error(self, status, request, detail):
        """The error for an answer that is neither data nor a redirect."""
        if status in (401, 403):
            return exception.UsageError(
                exception.REMOTE_AUTH,
                '%s refused the credentials (%d): %s'
                % (self.url, status, detail))
        if status in (404, 410):
            return exception.UsageError(
                exception.REMOTE_NOT_FOUND,
                '%s: no such image (%d)' % (self.url, status))
        return exception.InspectionFailed(
            exception.REMOTE_HTTP_ERROR,
            '%s answered %d to %s: %s' % (self.url, status, request, detail))

    def _accept_partial(self, response, range_value, want):
        headers = response.headers
        encoding = headers.get('Content-Encoding', 'identity').strip()
        if encoding.lower() != 'identity':
            raise exception.ImageRefused(
                exception.REMOTE_CONTENT_ENCODED,
                '%s sent %s encoded with %s' % (self.url, range_value,
                                                encoding))
        match = _CONTENT_RANGE.match(headers.get('Content-Range', ''))
        if not match:
            raise exception.ImageRefused(
                exception.REMOTE_RANGE_MISMATCH,
                '%s answered %s with 206 but Content-Range %r (%s)'
                % (self.url, range_value, headers.get('Content-Range'),
                   headers.get('Content-Type')))
        first, last, total = map(int, match.groups())
        self._check_total(total, range_value)
        wanted = want(total)
        if (first, last) != wanted:
            raise exception.ImageRefused(
                exception.REMOTE_RANGE_MISMATCH,
                '%s answered %s with bytes %d-%d, not %d-%d'
                % ((self.url, range_value, first, last) + wanted))
        expected = last - first + 1
        self._check_length(headers, expected, range_value)
        self._check_validators(headers)
        data = self._read_body(response, expected, range_value)
        self.bytes_fetched += len(data)
        return data

    def _accept_unsatisfiable(self, response, range_value, probing):
        match = _UNSATISFIED_RANGE.match(
            response.headers.get('Content-Range', ''))
        total = int(match.group(1)) if match else None
        if total is not None:
            self._check_total(total, range_value)
            if total == 0 and probing:
                return b''
        raise exception.InspectionFailed(
            exception.REMOTE_HTTP_ERROR,
            '%s: range %s not satisfiable (Content-Range %r)'
            % (self.url, range_value,
               response.headers.get('Content-Range')))

    def _check_total(self, total, range_value):
        if self.size is None:
            self.size = total
        elif total != self.size:
            raise exception.ImageRefused(
                exception.REMOTE_SIZE_MISMATCH,
                '%s says the image is %d bytes long (answering %s), but it '
                'is %d' % (self.url, total, range_value, self.size))

    def _check_length(self, headers, expected, range_value):
        announced = headers.get('Content-Length')
        if announced is None:
            return
        try:
            announced = int(announced)
        except ValueError:
            raise exception.ImageRefused(
                exception.REMOTE_RANGE_MISMATCH,
                '%s answered %s with Content-Length %r'
                % (self.url, range_value, announced))
        if announced != expected:
            raise exception.ImageRefused(
                exception.REMOTE_BODY_TOO_LONG if announced > expected
                else exception.REMOTE_BODY_TOO_SHORT,
                '%s announced %d bytes for %s, which is %d bytes'
                % (self.url, announced, range_value, expected))

    def _check_validators(self, headers):
        seen = {name: headers[name] for name in VALIDATORS if name in headers}
        if self._validators is None:
            self._validators = seen
            return
        for name, value in seen.items():
            before = self._validators.get(name)
            if before is not None and before != value:
                raise exception.ImageRefused(
                    exception.IMAGE_CHANGED,
                    '%s changed while it was read: %s was %r, now %r'
                    % (self.url, name, before, value))

    def _read_body(self, response, expected, range_value):
        # One byte more than asked is read, so that a body longer than
        # its range is seen whatever the framing (length, chunked, close).
        chunks, received = [], 0
        try:
            for chunk in response.iter_content(_READ_CHUNK):
                chunks.append(chunk)
                received += len(chunk)
                if received > expected:
                    raise exception.ImageRefused(
                        exception.REMOTE_BODY_TOO_LONG,
                        '%s sent more than the %d bytes of %s'
                        % (self.url, expected, range_value))
        except requests.exceptions.ChunkedEncodingError as err:
            raise exception.ImageRefused(
                exception.REMOTE_BODY_TOO_SHORT,
                '%s ended the body of %s after %d of its %d bytes: %s'
                % (self.url, range_value, received, expected, err))
        except requests.RequestException as err:
            raise exception.InspectionFailed(
                exception.REMOTE_UNREACHABLE,
                '%s: reading %s failed after %d bytes: %s'
                % (self.url, range_value, received, err))
        if received < expected:
            raise exception.ImageRefused(
                exception.REMOTE_BODY_TOO_SHORT,
                '%s sent %d of the %d bytes of %s'
                % (self.url, received, expected, range_value))
        return b''.join(chunks)


def _keystone_session(session):
    """The keystoneauth Session of a Session or an Adapter, else None."""
    if hasattr(session, 'get_auth_headers'):
        return session
    inner = getattr(session, 'session', None)
    if hasattr(inner, 'get_auth_headers'):
        return inner
    return None


def _origin(url):
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or '').lower(), (
        parts.port or _DEFAULT_PORTS.get(scheme))


def _snippet(response):
    """The start of an error answer's body, for a message."""
    try:
        body = response.raw.read(_ERROR_SNIPPET, decode_content=True)
    except Exception:
        return ''
    return body.decode('utf-8', 'replace').strip().replace('\n', ' ')
