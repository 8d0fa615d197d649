"""The documentation the package owns.

- Every document, docstring and comment that names a document (a `.md` or
  `.rst` file) names one this repository contains.
- Every module with public names has a page in docs/reference. (The docs
  build, `python -m sphinx -W docs ...` in .ci/run, checks each name of each
  `__all__` is documented there.)
"""

import importlib
import os
import pkgutil
import re

import asyncoro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {'.git', '.venv', 'build', 'dist', '_build', '__pycache__'}
TEXT = ('.py', '.rst', '.md', '.txt', '.ini', '.cfg', '.toml', '.html', '.js', '.css', '')
DOCUMENT = re.compile(r'(?<![\w./-])((?:[\w-]+/|\.\./)*[\w-]+\.(?:md|rst))\b')


def _files():
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith('.egg-info')]
        for name in files:
            if os.path.splitext(name)[1] in TEXT:
                yield os.path.join(top, name)


def test_every_document_named_is_in_the_repository():
    present = set()
    for path in _files():
        rel = os.path.relpath(path, ROOT)
        present.add(rel)
        present.add(os.path.basename(rel))
    missing = []
    for path in _files():
        try:
            with open(path, encoding='utf-8') as f:
                text = f.read()
        except UnicodeDecodeError:      # not text after all
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for named in DOCUMENT.findall(line):
                if named.startswith('../') or named not in present and \
                        os.path.basename(named) not in present:
                    missing.append('%s:%d names %s' % (os.path.relpath(path, ROOT), number,
                                                       named))
    assert missing == []


def test_every_module_with_public_names_has_a_reference_page():
    pages = ''
    reference = os.path.join(ROOT, 'docs', 'reference')
    for name in os.listdir(reference):
        with open(os.path.join(reference, name), encoding='utf-8') as f:
            pages += f.read()
    modules = ['asyncoro'] + ['asyncoro.' + info.name
                              for info in pkgutil.iter_modules(asyncoro.__path__)]
    unlisted = [name for name in modules
                if getattr(importlib.import_module(name), '__all__', None) and
                not re.search(r'\.\. (automodule|exports):: %s\n' % re.escape(name), pages)]
    assert unlisted == []
