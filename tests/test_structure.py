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
3. A private attribute of another module's object (`runtime._tid`,
   `self.rt._loop`: not `self._x` or `cls._x`, nor defined in the module that uses
   it) is one of the runtime's and coroutine's hooks, listed in
   `asyncoro.core._HOOKS`. (Attributes of imported modules are rule 2's.)
4. No class over 450 lines and no function over 60, docstrings not counted
   (module, class and function docstrings inside it): past that it holds two
   jobs, to split along the seam it has.
"""

import ast
import importlib.util
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


def _defined_attributes(tree):
    """The attribute names a module gives its own objects: its classes' and
    functions' names, the attributes it assigns (self.x = ..., obj.x = ...)
    and the names in its classes' bodies and __slots__."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.attr)
        if isinstance(node, ast.ClassDef):
            for statement in node.body:
                if isinstance(statement, ast.Assign):
                    for target in statement.targets:
                        if isinstance(target, ast.Name):
                            names.add(target.id)
                            if target.id == '__slots__':
                                names.update(ast.literal_eval(statement.value))
    return names


def _module_names(tree):
    """The names `tree` binds to modules by its imports (`import os`, `from
    asyncoro import core`), not those bound to their classes or functions."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.add(alias.asname or alias.name.split('.')[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                if _is_module('%s.%s' % (node.module, alias.name)):
                    names.add(alias.asname or alias.name)
    return names


def _is_module(dotted):
    if dotted in MODULES:
        return True
    try:
        return importlib.util.find_spec(dotted) is not None
    except (ImportError, ValueError):
        return False


def _root(node):
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


# the standard library's private names that are its API
STDLIB_HOOKS = {'_replace',         # collections.namedtuple's copy with changes
                '_actions'}         # argparse.ArgumentParser's options (to write a config)


def _foreign_attributes(tree):
    """(attribute, line) of each private attribute `tree` reads of an object
    that is not its own (see rule 3)."""
    own, modules = _defined_attributes(tree), _module_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and \
                node.attr not in own and _root(node.value) not in modules and \
                not (isinstance(node.value, ast.Name) and node.value.id in ('self', 'cls')):
            found.append((node.attr, node.lineno))
    return found


def test_no_private_attribute_of_another_modules_object_but_the_hooks():
    allowed = set(asyncoro.core._HOOKS) | STDLIB_HOOKS
    crossings = ['%s:%d takes ._%s' % (name, line, attr.lstrip('_'))
                 for name, tree in MODULES.items()
                 for attr, line in _foreign_attributes(tree) if attr not in allowed]
    assert crossings == []


def test_every_hook_is_the_cores_and_used_elsewhere():
    core_own = _defined_attributes(MODULES['asyncoro.core'])
    used = {attr for name, tree in MODULES.items() if name != 'asyncoro.core'
            for attr, _ in _foreign_attributes(tree)}
    for hook in asyncoro.core._HOOKS:
        assert hook in core_own, '%s is not an attribute the core defines' % hook
        assert hook in used, '%s is listed but no other module uses it' % hook


def test_the_attribute_rule_sees_a_crossing():
    tree = ast.parse('import os\nfrom asyncoro.core import AsynCoro\n'
                     'class A:\n    __slots__ = ("_mine",)\n'
                     '    def f(self, rt, coro):\n'
                     '        return (self._x, rt._tid, self.c._secret, os._exit, self._mine,\n'
                     '                AsynCoro._instance)\n')
    assert sorted(attr for attr, _ in _foreign_attributes(tree)) == ['_instance', '_secret',
                                                                      '_tid']


MAX_CLASS_LINES, MAX_FUNCTION_LINES = 450, 60


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
            if size > (MAX_CLASS_LINES if kind == 'class' else MAX_FUNCTION_LINES)]
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
