"""The configuration tests, benchmarks and tools run with.

The one builder of it: what differs from the defaults when the code runs
outside a service (a private workspace, no free-space reserve, no guest
appliance unless the caller asks for one, and then under software
emulation unless the environment says otherwise), plus what the caller
overrides, group by group.
"""

import os

from oslo_config import cfg

from qimgintrospect import opts

#: libguestfs backend settings for appliances in tests and benchmarks:
#: software emulation unless the environment says otherwise, so that no
#: test pays for the KVM probe (0.2 s where KVM aborts, 10 s where it
#: hangs); tests/functional/test_guest_accelerator.py tests the probe
#: itself, with ``backend_settings`` empty as in the default
#: configuration.
BACKEND_SETTINGS = [s for s in os.environ.get(
    'LIBGUESTFS_BACKEND_SETTINGS', 'force_tcg').split(':') if s]


def overrides(workspace_dir, guest=False, **groups):
    """Option values by group for a run whose workspace is *workspace_dir*.

    :param guest: run the guest stage (under :data:`BACKEND_SETTINGS`).
    :param groups: more values, ``group_name={option: value}``; they win.
    """
    values = {
        opts.WORKSPACE_GROUP: {
            'directory': str(workspace_dir),
            'min_free_mb': 0,
            'slot_wait_timeout': 5,
        },
        opts.GUEST_GROUP: {'enabled': guest},
    }
    if guest:
        values[opts.GUEST_GROUP]['backend_settings'] = BACKEND_SETTINGS
    for group, options in groups.items():
        values.setdefault(group, {}).update(options)
    return values


def make_conf(workspace_dir, guest=False, **groups):
    """A fresh ConfigOpts with :func:`overrides` applied."""
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf([], project='qimgintrospect', default_config_files=[])
    for group, values in overrides(workspace_dir, guest, **groups).items():
        for name, value in values.items():
            conf.set_override(name, value, group)
    return conf


def write_config_file(path, values):
    """Write option *values* ({group: {name: value}}) as an ini file."""
    lines = []
    for group, options in values.items():
        lines.append('[%s]' % group)
        for name, value in options.items():
            if isinstance(value, (list, tuple)):
                value = ','.join(value)
            lines.append('%s = %s' % (name, value))
    with open(os.fspath(path), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def workspace_leftovers(directory):
    """Files in a workspace other than what it keeps (should be none).

    It keeps its lock files (``.locks``) and what it knows of the host
    (``.host``: the KVM probe's verdict).
    """
    found = []
    for root, dirs, files in os.walk(str(directory)):
        dirs[:] = [d for d in dirs if d not in ('.locks', '.host')]
        found += [os.path.join(root, f) for f in files]
        found += [os.path.join(root, d) for d in dirs]
    return found
