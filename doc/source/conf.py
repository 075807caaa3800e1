"""Sphinx configuration of the qimgintrospect documentation.

Nothing that describes the code is written by hand: the configuration
reference and sample come from ``qimgintrospect/opts.py`` (oslo.config's
Sphinx extensions), the CLI reference from the cliff argument parsers, and
the error-code tables from ``qimgintrospect/exception.py`` (``_exts``).
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
import sys

sys.path.insert(0, os.path.abspath('_exts'))

extensions = [
    'openstackdocstheme',
    'oslo_config.sphinxext',
    'oslo_config.sphinxconfiggen',
    'cliff.sphinxext',
    'qimg_reference',
]

# oslo_config.sphinxconfiggen: the sample file, generated at build time.
config_generator_config_file = '../../etc/oslo-config-generator/' \
    'qimgintrospect.conf'
sample_config_basename = '_static/qimgintrospect'

# cliff.sphinxext: the subcommands' entry-point namespace.
autoprogram_cliff_application = 'qimg-introspect'

project = 'qimgintrospect'
copyright = '2026, qimgintrospect developers'
master_doc = 'index'
exclude_patterns = []
pygments_style = 'native'

openstackdocs_repo_name = 'qimgintrospect/qimgintrospect'
openstackdocs_use_storyboard = False
openstackdocs_auto_name = False
openstackdocs_bug_project = 'qimgintrospect'
openstackdocs_bug_tag = 'doc'

html_theme = 'openstackdocs'
html_static_path = ['_static']
