"""Sphinx configuration of asyncoro's documentation.

Build it (the CI does, with warnings as errors) from the checkout's root:

    python -m pip install '.[docs]'
    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# the checkout's package, not an installed copy, and this folder's extension
sys.path[:0] = [os.path.dirname(HERE), os.path.join(HERE, '_ext')]

import asyncoro  # noqa: E402

project = 'asyncoro'
author = 'the asyncoro developers'
copyright = 'the asyncoro developers, MIT licence'
release = asyncoro.__version__
version = '.'.join(release.split('.')[:2])

extensions = ['sphinx.ext.autodoc', 'sphinx.ext.viewcode', 'asyncoro_docs']

# `text` in docstrings is code (a name, a call, a value), shown as such
default_role = 'code'
autodoc_member_order = 'bysource'
autodoc_default_options = {'members': True, 'undoc-members': False}
# autodoc imports the modules; the runtime never starts on import
add_module_names = False
python_display_short_literal_types = True

exclude_patterns = ['_build']
templates_path = []
html_theme = 'alabaster'
html_static_path = []
html_title = 'asyncoro %s' % release
html_theme_options = {'description': 'distributed communicating processes on gevent',
                      'fixed_sidebar': False}
