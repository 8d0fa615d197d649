"""Sphinx helpers for asyncoro's documentation.

- ``.. exports:: MODULE`` lists every name of MODULE's ``__all__`` with a
  link to where the reference documents it (classes and functions where
  they are defined; data in the lowest module whose ``__all__`` names it).
- ``.. program-help:: MODULE`` shows what ``MODULE.main(['--help'])``
  prints: the options of a program, never out of date.
- ``.. state-moves:: MODULE.ENUM MODULE.MOVES`` tables the states of one
  of the scheduler's enums, what each means and where it may go, from the
  code (asyncoro.schedstate).
- When the pages have been read, every name of every package module's
  ``__all__`` must be documented in the reference, at the place
  ``exports`` links to; a missing one is a warning, which the CI build
  (``-W``) turns into an error.
- Docstrings are plain text first: three habits of that text are made
  valid reST before autodoc renders them (a call's ``*args``, a plural
  such as `deliver`s, a field list followed at once by more text). Each
  docstring that needed it is named at the end of the build, so it can be
  written as reST at the source; nothing else is changed or hidden.
"""

import contextlib
import importlib
import inspect
import io
import os
import pkgutil
import re
import sys

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

log = logging.getLogger(__name__)

PACKAGE = 'asyncoro'


def package_modules():
    """The package's modules, imported, the package itself first."""
    package = importlib.import_module(PACKAGE)
    names = [PACKAGE] + sorted('%s.%s' % (PACKAGE, info.name)
                               for info in pkgutil.iter_modules(package.__path__))
    return [importlib.import_module(name) for name in names]


# where data (not classes or functions) is documented: the first of these
# modules whose __all__ names it
_DATA_ORDER = ('asyncoro.core', 'asyncoro.netio', 'asyncoro.disasyncoro')


def home(module, name):
    """The dotted name under which the reference documents `module.name`."""
    obj = getattr(module, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        return '%s.%s' % (obj.__module__, obj.__qualname__)
    for candidate in _DATA_ORDER:
        owner = importlib.import_module(candidate)
        if name in getattr(owner, '__all__', ()) and getattr(owner, name) is obj:
            return '%s.%s' % (candidate, name)
    return '%s.%s' % (module.__name__, name)


def _kind(obj):
    if inspect.isclass(obj):
        return 'exception' if issubclass(obj, BaseException) else 'class'
    if inspect.isfunction(obj):
        return 'function'
    return 'data'


class Exports(SphinxDirective):
    """A table of a module's public names, each linked to its entry."""

    required_arguments = 1

    def run(self):
        module = importlib.import_module(self.arguments[0])
        lines = ['.. list-table::', '   :header-rows: 1', '   :widths: 30 15 55', '',
                 '   * - Name', '     - Kind', '     - Documented as']
        for name in module.__all__:
            target = home(module, name)
            lines += ['   * - ``%s``' % name,
                      '     - %s' % _kind(getattr(module, name)),
                      '     - :py:obj:`%s`' % target]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=self.get_source_info()[0]),
                                self.content_offset, container)
        return container.children


class ProgramHelp(SphinxDirective):
    """What a program prints for --help, as a literal block."""

    required_arguments = 1

    def run(self):
        module = importlib.import_module(self.arguments[0])
        out = io.StringIO()
        old = os.environ.get('COLUMNS')
        os.environ['COLUMNS'] = '80'        # argparse wraps to it: the same text everywhere
        try:
            with contextlib.redirect_stdout(out):
                try:
                    module.main(['--help'])
                except SystemExit:
                    pass
        finally:
            if old is None:
                del os.environ['COLUMNS']
            else:
                os.environ['COLUMNS'] = old
        text = out.getvalue().rstrip()
        if not text:
            log.warning('%s.main(["--help"]) printed nothing', self.arguments[0],
                        location=self.get_location())
        block = nodes.literal_block(text, text)
        block['language'] = 'text'
        return [block]


class StateMoves(SphinxDirective):
    """``.. state-moves:: MODULE.ENUM MODULE.MOVES``: a table of the states
    of an enum (each member's name and the comment that follows it in the
    source, continuation lines included) and the states each may move to,
    from the module's table of moves: the docs say what the code does."""

    required_arguments = 2

    def run(self):
        enum_path, moves_path = self.arguments
        module_name, enum_name = enum_path.rsplit('.', 1)
        module = importlib.import_module(module_name)
        states = getattr(module, enum_name)
        moves = getattr(importlib.import_module(moves_path.rsplit('.', 1)[0]),
                        moves_path.rsplit('.', 1)[1])
        meanings = state_meanings(states)
        rows = ['.. list-table::', '   :header-rows: 1', '   :widths: 14 56 30', '',
                '   * - State', '     - What it means', '     - It may move to']
        for state in states:
            targets = sorted(moves.get(state, ()), key=lambda s: list(states).index(s))
            rows += ['   * - ``%s``' % state.name, '     - %s' % (meanings.get(state.name) or ''),
                     '     - %s' % (', '.join('``%s``' % t.name for t in targets) or '(none)')]
            if not meanings.get(state.name):
                log.warning('%s.%s has no comment saying what it means', enum_path, state.name,
                            location=self.get_location())
        container = nodes.container()
        self.state.nested_parse(StringList(rows, source=enum_path), self.content_offset,
                                container)
        return container.children


def state_meanings(states):
    """{member name: the comment after it in the source}, comment lines that
    follow (starting with '#', indented further) joined on."""
    meanings, current = {}, None
    for line in inspect.getsource(states).splitlines():
        member = re.match(r'\s+([A-Z_]+) = .*?#\s*(.*)$', line)
        more = re.match(r'\s+#\s*(.*)$', line)
        if member:
            current = member.group(1)
            meanings[current] = member.group(2)
        elif more and current:
            meanings[current] += ' ' + more.group(1)
        else:
            current = None
    return meanings


def check_exports(app, env):
    """Every public name of the package is documented where `exports` links."""
    documented = set(env.get_domain('py').objects)
    for module in package_modules():
        for name in getattr(module, '__all__', ()):
            target = home(module, name)
            if target not in documented:
                log.warning('%s (in %s.__all__) is not documented in the reference',
                            target, module.__name__)


# ---------------------------------------------------------------- plain-text docstrings

_LITERAL = re.compile(r'(``[^`]+``|`[^`]+`)')
_STARS = re.compile(r'(?:(?<=\()|(?<=, ))(\*{1,2})(?=[A-Za-z_])')     # f(*args, **kwargs)
_FIELD = re.compile(r'^(\s*):[^:\s][^:]*:')


def _outside_literals(line, func):
    """`func` applied to the parts of `line` outside backquoted spans."""
    parts = _LITERAL.split(line)
    return ''.join(part if i % 2 else func(part) for i, part in enumerate(parts))


def _glued_plural(line):
    """A backquoted span directly followed by a letter (`deliver`s): an
    escaped space ends the span, as reST requires."""
    parts = _LITERAL.split(line)
    for i in range(1, len(parts) - 1, 2):
        if parts[i + 1][:1].isalpha():
            parts[i] += '\\ '
    return ''.join(parts)


def _fixed(lines):
    """The docstring's lines as valid reST, and the habits that needed it."""
    out, habits = [], set()
    field_indent = None
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if field_indent is not None and stripped and indent <= field_indent \
                and not _FIELD.match(line):
            out.append('')          # a field list ends with a blank line
            habits.add('text right after a field list')
            field_indent = None
        if not stripped:
            field_indent = None
        elif _FIELD.match(line):
            field_indent = indent
        new = _outside_literals(line, lambda part: _STARS.sub(
            lambda m: '\\*' * len(m.group(1)), part))
        if new != line:
            habits.add('*args in a call')
        glued = _glued_plural(new)
        if glued != new:
            habits.add('a letter right after `code`')
        out.append(glued)
    return out, habits


def fix_docstring(app, what, name, obj, options, lines):
    new, habits = _fixed(lines)
    if habits:
        lines[:] = new
        app.env.asyncoro_fixed = getattr(app.env, 'asyncoro_fixed', {})
        app.env.asyncoro_fixed[name] = sorted(habits)


def report_fixed(app, exception):
    fixed = getattr(app.env, 'asyncoro_fixed', {})
    if exception is None and fixed:
        sys.stdout.write('docstrings made valid reST at build time (write them as reST at '
                         'the source):\n')
        for name in sorted(fixed):
            sys.stdout.write('  %s: %s\n' % (name, ', '.join(fixed[name])))


def merge_fixed(app, env, docnames, other):
    env.asyncoro_fixed = getattr(env, 'asyncoro_fixed', {})
    env.asyncoro_fixed.update(getattr(other, 'asyncoro_fixed', {}))


def setup(app):
    app.add_directive('exports', Exports)
    app.add_directive('program-help', ProgramHelp)
    app.add_directive('state-moves', StateMoves)
    app.connect('autodoc-process-docstring', fix_docstring)
    app.connect('env-check-consistency', check_exports)
    app.connect('env-merge-info', merge_fixed)
    app.connect('build-finished', report_fixed)
    return {'parallel_read_safe': True, 'parallel_write_safe': True}
