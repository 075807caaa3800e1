"""What libguestfs finds inside checked workspace copies: the guest OS.

:func:`inspect_images` takes the copies of ONE owner (several images share
an appliance only when they share an owner; the caller groups them) and
returns, per image, raw findings in libguestfs's own terms
(``guest_distro='archlinux'``) or the error of that image alone;
:func:`qimgintrospect.normalise.guest_properties` maps them to Glance's
vocabulary.

The package follows the seams of the work:

* :mod:`.appliance`: one libguestfs appliance, launched boxed in (drives
  read-only with their format forced, no network, a watchdog that kills
  it past its timeouts) and always shut down; :mod:`.console`: what it
  wrote on its console (why it failed, whether its guest ran);
* :mod:`.accelerator`: KVM or software emulation, with a short probe
  where KVM may be broken, and the fallback of a launch under KVM;
  :mod:`.verdicts`: the probe's verdict, kept in the workspace for the
  other processes of this host;
* :mod:`.session`: the appliances of one call: all images in one, then
  alone those that need it, and who is to blame when an appliance fails
  (the image or the host, remembered for a while);
* :mod:`.census`: which drive each answer comes from inside a shared
  appliance, so that no image gets another's answer;
* :mod:`.probes`: what is inside one guest, one module per OS family.
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
from qimgintrospect.inspectors.guest import accelerator
from qimgintrospect.inspectors.guest import appliance
from qimgintrospect.inspectors.guest import session
from qimgintrospect.inspectors.guest import verdicts
from qimgintrospect import opts

#: One image for the appliance: the workspace copy, its verified Glance
#: disk format, and a label for logs (the user's path). A remote image
#: read by ranges is an NBD export instead: ``server`` (libguestfs's
#: ``['unix:SOCKET']``) and its export name as ``path``.
GuestImage = collections.namedtuple('GuestImage',
                                    ['path', 'disk_format', 'label',
                                     'server'])
GuestImage.__new__.__defaults__ = (None,)


def inspect_images(images, conf, workdir, observer=None):
    """Inspect the guest OS of images of one owner.

    :param images: list of :class:`GuestImage`; they share appliances, so
        the caller must never mix owners.
    :param workdir: a private directory (the workspace slot) for the
        appliances' temporary files.
    :param observer: a :mod:`qimgintrospect.progress` observer, told when
        KVM is probed and appliances start, run and close.
    :returns: a list, in the order of *images*, holding for each image
        either a findings dict (``guest_*`` keys, ``warnings``) or the
        :class:`~qimgintrospect.exception.IntrospectionError` of that image
        (guest-unavailable, guest-timeout, guest-appliance-failed). Never
        raises for one image's sake; no appliance outlives the call.
    """
    try:
        gfs = appliance.load_binding()
    except (ImportError, OSError) as err:
        error = exception.InspectionFailed(
            exception.GUEST_UNAVAILABLE,
            'libguestfs Python binding (python3-guestfs) cannot be '
            'imported: %s' % err)
        return [error] * len(images)
    store = verdicts.VerdictStore(conf[opts.WORKSPACE_GROUP].directory)
    launcher = accelerator.Launcher(gfs, conf, workdir, store, observer)
    return session.Session(launcher, images, conf).run()
