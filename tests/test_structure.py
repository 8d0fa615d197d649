"""The package's structure: imports go one way, and modules keep their
private names to themselves.

The rules, read from the source (every import, at any depth of a module):

1. No import cycle among the package's modules. `from asyncoro import X`
   where X is a module of the package is an import of that module; the
   package's face (asyncoro/__init__.py) is a module like the others.
2. No module takes another module's private name (`_name`: by `from M
   import _name`, or as `M._name` of an imported module M), except
   - the core's documented internals, listed in `asyncoro.core._INTERNALS`
     (the lower layers' hooks into the runtime: `_runtime`, `_get_ident`, ...);
   - names of `asyncoro.programs`, the module the three programs share.
   Attributes of objects (`runtime._tid`) are not module names and are not
   checked here.
3. No class over 450 lines and no function over 60, docstrings not counted
   (module, class and function docstrings inside it): past that it holds two
   jobs, to split along the seam it has. `OVERSIZED` lists those still over
   it while their own issue splits them; none may join it.
"""

import ast
import os

import asyncoro.core

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'asyncoro')


def _modules():
    """{dotted name: parsed source} of every module of the package."""
    found = {}
    for name in sorted(os.listdir(PACKAGE)):
        if name.endswith('.py'):
            dotted = 'asyncoro' if name == '__init__.py' else 'asyncoro.' + name[:-3]
            with open(os.path.join(PACKAGE, name)) as f:
                found[dotted] = ast.parse(f.read(), name)
    return found


MODULES = _modules()


def _imports(tree):
    """(module imported, [names taken from it]) for each import in `tree`,
    and {local name: module} of the names bound to package modules."""
    edges, bound = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split('.')[0] == 'asyncoro':
                    edges.append((alias.name, []))
                    bound[alias.asname or alias.name.split('.')[0]] = \
                        alias.name if alias.asname else 'asyncoro'
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.split('.')[0] == 'asyncoro':
            names = []
            for alias in node.names:
                sub = '%s.%s' % (node.module, alias.name)
                if sub in MODULES:
                    edges.append((sub, []))
                    bound[alias.asname or alias.name] = sub
                else:
                    names.append(alias.name)
            if names:
                edges.append((node.module, names))
    return edges, bound


def _private_uses(tree, bound):
    """`module._name` uses of the package modules bound in `tree`."""
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                node.value.id in bound and _private(node.attr):
            uses.append((bound[node.value.id], node.attr))
    return uses


def _private(name):
    return name.startswith('_') and not (name.startswith('__') and name.endswith('__'))


def test_no_import_cycle():
    graph = {name: {target for target, _ in _imports(tree)[0] if target != name}
             for name, tree in MODULES.items()}
    cycles = []
    state = {}

    def visit(name, path):
        state[name] = 'open'
        for target in sorted(graph.get(name, ())):
            if state.get(target) == 'open':
                cycles.append(' -> '.join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[name] = 'done'
    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_no_private_name_crosses_modules():
    allowed = {('asyncoro.core', name) for name in asyncoro.core._INTERNALS}
    crossings = []
    for name, tree in MODULES.items():
        edges, bound = _imports(tree)
        taken = [(module, imported) for module, names in edges for imported in names]
        for module, imported in taken + _private_uses(tree, bound):
            if module == name or not _private(imported) or module == 'asyncoro.programs':
                continue
            if (module, imported) not in allowed:
                crossings.append('%s takes %s.%s' % (name, module, imported))
    assert crossings == []


def test_the_documented_internals_exist_and_are_used():
    used = set()
    for name, tree in MODULES.items():
        edges, bound = _imports(tree)
        for module, names in edges:
            used.update((module, n) for n in names)
        used.update(_private_uses(tree, bound))
    for name in asyncoro.core._INTERNALS:
        assert hasattr(asyncoro.core, name), name
        assert ('asyncoro.core', name) in used, '%s is listed but no module uses it' % name


MAX_CLASS_LINES, MAX_FUNCTION_LINES = 450, 60
OVERSIZED = {'asyncoro.disasyncoro.AsynCoro', 'asyncoro.monitor.Monitor',
             'asyncoro.webapp.make_app'}


def _docstring_lines(node):
    """The line numbers of the docstrings in `node` (its own and those of
    the classes and functions inside it)."""
    lines = set()
    for inner in ast.walk(node):
        if isinstance(inner, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and \
                ast.get_docstring(inner, clean=False) is not None:
            doc = inner.body[0]
            lines.update(range(doc.lineno, doc.end_lineno + 1))
    return lines


def _sizes():
    """(dotted name, kind, lines without docstrings) of every class and
    function of the package (methods and nested functions too)."""
    found = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                size = child.end_lineno - first + 1 - len(_docstring_lines(child))
                kind = 'class' if isinstance(child, ast.ClassDef) else 'function'
                found.append(('%s.%s' % (prefix, child.name), kind, size))
                visit(child, '%s.%s' % (prefix, child.name))
            else:
                visit(child, prefix)
    for name, tree in MODULES.items():
        visit(tree, name)
    return found


def test_no_class_over_450_lines_and_no_function_over_60():
    over = ['%s (%s, %d lines)' % (name, kind, size) for name, kind, size in _sizes()
            if size > (MAX_CLASS_LINES if kind == 'class' else MAX_FUNCTION_LINES) and
            name not in OVERSIZED]
    assert over == []


def test_sizes_are_counted_without_docstrings():
    tree = ast.parse('class A:\n    """Doc\n    string."""\n\n    def f(self):\n'
                     '        """One line."""\n        return 1\n')
    cls = tree.body[0]
    assert (cls.end_lineno - cls.lineno + 1, len(_docstring_lines(cls))) == (7, 3)


# What the scheduler knows is kept apart from what it does: its state module
# is pure (no gevent, no sockets, no clock), so every transition is tested as
# a table without processes (tests/test_schedstate.py).
PURE = {'asyncoro.schedstate', 'asyncoro.placement'}
IMPURE = {'gevent', 'socket', 'time', 'select', 'selectors', 'threading', 'ssl', 'asyncio'}


def test_the_scheduler_state_imports_no_gevent_socket_or_clock():
    for name in sorted(PURE):
        found = set()
        for node in ast.walk(MODULES[name]):
            if isinstance(node, ast.Import):
                found.update(alias.name.split('.')[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module.split('.')[0])
        assert not found & IMPURE, '%s imports %s' % (name, sorted(found & IMPURE))
        package = {target for target, _ in _imports(MODULES[name])[0]}
        assert package <= PURE, '%s imports %s, which may not be pure' % (
            name, sorted(package - PURE))
