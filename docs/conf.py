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

# every cross-reference must find its target (a warning, so an error with
# -W); the standard library's names have no inventory here (no network),
# so those are let through by name
nitpicky = True
nitpick_ignore = [
    ('py:exc', 'socket.timeout'), ('py:exc', 'subprocess.TimeoutExpired'),
    ('py:exc', 'pickle.PicklingError'), ('py:exc', 'pickle.UnpicklingError'),
    # asyncoro/scheduler.py's docstring names DiscoroStatus by its public
    # home; the reference documents it in asyncoro.records
    ('py:class', 'asyncoro.discoro.DiscoroStatus'),
]
templates_path = []
html_theme = 'alabaster'
html_static_path = []
html_title = 'asyncoro %s' % release
html_theme_options = {'description': 'distributed communicating processes on gevent',
                      'fixed_sidebar': False}

# linkcheck checks the links between these pages and to files of the
# project; it never contacts another site (the tests and CI run without a
# network): every URL with a scheme is skipped
linkcheck_ignore = [r'^[a-z][a-z0-9+.-]*://', r'^mailto:']
linkcheck_anchors = False
