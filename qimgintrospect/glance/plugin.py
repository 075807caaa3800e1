"""Glance image-import plugin: the image's own metadata as properties.

Enabled in glance-api.conf with ``[image_import_opts] image_import_plugins
= ['qimgintrospect']``; its policy is ``[introspection_import]``, the core's
options are the other ``[introspection_*]`` groups of the same file. Glance
runs it on the staged data, before the data goes to a store, so a refused
image never becomes active.
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

from glance.common import exception as glance_exception
from oslo_config import cfg
from oslo_log import log as logging
from taskflow.patterns import linear_flow as lf
from taskflow import task

from qimgintrospect import api
from qimgintrospect import diskformats
from qimgintrospect import exception
from qimgintrospect.glance import properties
from qimgintrospect import normalise
from qimgintrospect import opts

LOG = logging.getLogger(__name__)

CONF = cfg.CONF
opts.register_opts(CONF)


class _Introspect(task.Task):
    """Inspect the staged image and set what it says on the Glance image."""

    def __init__(self, task_id, task_type, action_wrapper, image_repo=None):
        self.task_id = task_id
        self.task_type = task_type
        self.action_wrapper = action_wrapper
        self.image_repo = image_repo
        self.image_id = action_wrapper.image_id
        # Extra property -> value before execute() changed it (None: it
        # was absent), so that revert() undoes exactly that.
        self._previous = None
        self._previous_min_disk = None
        super(_Introspect, self).__init__(
            name='%s-Introspect-%s' % (task_type, task_id))

    def execute(self, file_path):
        """Set the image's properties; raise to fail the import.

        :raises glance.common.exception.UploadException: the image was
            refused or not inspected and the policy is ``fail``; its text,
            ``qimgintrospect: CODE: message``, becomes the task's message.
        """
        policy = CONF[opts.IMPORT_GROUP]
        with self.action_wrapper as action:
            disk_format = action.image_disk_format
            container_format = action.image_container_format
            current = dict(action.image_extra_properties,
                           disk_format=disk_format)
        if not diskformats.is_disk_image(container_format, disk_format):
            LOG.info('Image %s: %s/%s data is not a disk image this plugin '
                     'inspects; left as it is', self.image_id,
                     container_format, disk_format)
            return

        # Glance stages the data as file://PATH.
        path = file_path.split('file://', 1)[-1]
        try:
            # Guest detection boots an appliance per image: the plugin has
            # its own switch for it, whatever [introspection_guest] says.
            result = api.inspect(path, disk_format, CONF,
                                 run_guest=policy.guest_inspection)
        except exception.IntrospectionError as err:
            self._not_inspected(err, policy)
            return

        if self.image_repo is not None:
            current['min_disk'] = self.image_repo.get(self.image_id).min_disk
        differences = properties.compare(
            result.properties, current,
            overwrite=policy.overwrite_uploader_properties)
        for conflict in properties.conflicts(differences):
            LOG.warning('Image %s: the uploader set %s=%s but the image '
                        'says %s; keeping the uploader\'s value',
                        self.image_id, conflict.name, conflict.glance,
                        conflict.image)
        to_set, _ = properties.changes(differences)
        min_disk = to_set.pop('min_disk', None)
        core, _ = normalise.core_attributes(result.properties)
        with self.action_wrapper as action:
            before = action.image_extra_properties
            self._previous = {name: before.get(name) for name in to_set}
            action.set_image_extra_properties(to_set)
            if 'virtual_size' in core:
                action.set_image_attribute(virtual_size=core['virtual_size'])
        if min_disk is not None:
            self._set_min_disk(min_disk)
            to_set['min_disk'] = min_disk
        LOG.info('Image %s: set %s', self.image_id,
                 ', '.join('%s=%s' % kv for kv in sorted(to_set.items()))
                 or 'nothing new')

    def _set_min_disk(self, value):
        """Raise the image's min_disk to *value* GiB.

        Glance's import actions set only status, formats and sizes
        (ImportActionWrapper.set_image_attribute), so min_disk goes
        through the image repository Glance gave the flow, as any other
        change of the image by its owner.
        """
        if self.image_repo is None:
            LOG.warning('Image %s: no image repository to set min_disk=%d '
                        'with', self.image_id, value)
            return
        image = self.image_repo.get(self.image_id)
        self._previous_min_disk = image.min_disk
        image.min_disk = value
        self.image_repo.save(image)

    def _not_inspected(self, err, policy):
        # The policy for a refusal (exit code 3) or for any other error.
        refused = isinstance(err, exception.ImageRefused)
        action = policy.on_refusal if refused else policy.on_failure
        reason = '%s: %s' % (err.code, err.message)
        if action == 'fail':
            LOG.error('Image %s: import failed: %s', self.image_id, reason)
            raise glance_exception.UploadException(
                'qimgintrospect: %s' % reason)
        LOG.warning('Image %s: imported with a warning: %s', self.image_id,
                    reason)
        with self.action_wrapper as action:
            name = policy.warning_property
            self._previous = {
                name: action.image_extra_properties.get(name)}
            action.set_image_extra_properties({name: reason})

    def revert(self, result, **kwargs):
        """Put back the properties execute() changed, if it changed any."""
        if self._previous_min_disk is not None:
            image = self.image_repo.get(self.image_id)
            image.min_disk = self._previous_min_disk
            self.image_repo.save(image)
            self._previous_min_disk = None
        if not self._previous:
            return
        with self.action_wrapper as action:
            for name, value in self._previous.items():
                if value is None:
                    action.pop_extra_property(name)
                else:
                    action.set_image_extra_properties({name: value})
        self._previous = None


def get_flow(**kwargs):
    """Return the plugin's flow: one task, :class:`_Introspect`.

    :param task_id: the import task's id.
    :param task_type: the import task's type.
    :param action_wrapper: Glance's ImportActionWrapper for the image.
    """
    task_id = kwargs.get('task_id')
    task_type = kwargs.get('task_type')
    action_wrapper = kwargs.get('action_wrapper')
    # The repository the action wrapper uses (admin's when Glance gave
    # one): min_disk is set through it.
    image_repo = kwargs.get('admin_repo') or kwargs.get('image_repo')

    return lf.Flow(task_type).add(
        _Introspect(task_id, task_type, action_wrapper, image_repo),
    )
