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


# ---------------------------------------------------------------- the programs' options

PROGRAMS = {'discoronode.py': 'asyncoro.discoronode', 'discoro.py': 'asyncoro.discoro',
            'httpd.py': 'asyncoro.httpd'}


def _parser_of(module_name):
    """The argparse parser of a program's module."""
    return importlib.import_module(module_name)._parser()


def _documented_options(text):
    """{program: {option string: the text of its entry}} from the
    `.. program::` and `.. option::` directives of docs/programs.rst."""
    found, program, current = {}, None, None
    for line in text.splitlines():
        match = re.match(r'\.\. program:: (\S+)$', line)
        if match:
            program, current = match.group(1), None
            found[program] = {}
            continue
        match = re.match(r'\.\. option:: (.+)$', line)
        if match and program:
            current = []
            for part in match.group(1).split(','):
                found[program][part.split()[0]] = current
            continue
        if current is not None:
            if line and not line.startswith(' '):
                current = None
            else:
                current.append(line)
    return {program: {name: ' '.join(' '.join(body).split()) for name, body in options.items()}
            for program, options in found.items()}


def test_every_option_has_help_and_a_documented_entry_with_its_default():
    import argparse
    with open(os.path.join(ROOT, 'docs', 'programs.rst'), encoding='utf-8') as f:
        documented = _documented_options(f.read())
    problems = []
    for program, module_name in PROGRAMS.items():
        entries = documented.get(program, {})
        offered = set()
        for action in _parser_of(module_name)._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            if not (action.help or '').strip():
                problems.append('%s %s has no help text' % (program, action.option_strings))
            for option in action.option_strings:
                offered.add(option)
                body = entries.get(option)
                if body is None:
                    problems.append('%s %s is not in docs/programs.rst' % (program, option))
                elif 'default' not in body.lower():
                    problems.append('%s %s: its entry does not give its default'
                                    % (program, option))
                elif len(body.split()) < 8:
                    problems.append('%s %s: its entry is not a sentence or two'
                                    % (program, option))
        for option in sorted(set(entries) - offered):
            problems.append('%s %s is in docs/programs.rst but not an option'
                            % (program, option))
    assert problems == []


def test_discoro_pulse_interval_caps_the_schedulers_clock(capsys):
    """asyncoro 4.5's discoro.py takes --pulse_interval: here it is the
    longest the scheduler waits between two looks at its nodes (the state's
    clock), and a value under a second is refused in one line."""
    import pytest
    from asyncoro import discoro, schedstate
    assert _parser_of('asyncoro.discoro').parse_args(['--pulse_interval', '3']).pulse_interval \
        == 3
    with pytest.raises(SystemExit) as stop:
        discoro.main(['--pulse_interval', '0.5'])
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith(
        'discoro.py: error: --pulse_interval must be at least 1 second, not 0.5')
    state = schedstate.SchedState()
    state.begin(schedstate.Comp(1, 30), lambda node: 0)
    assert (state.next_tick(), state.next_tick(3)) == (30, 3)


# ---------------------------------------------------------------- code shown in the docs

def _pages():
    for top, dirs, files in os.walk(os.path.join(ROOT, 'docs')):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for name in sorted(files):
            if name.endswith('.rst'):
                yield os.path.join(top, name)


def test_the_interactive_examples_of_the_docs_give_what_they_show():
    """Every `>>>` example of docs/ (the allocation rules of
    guide/discoro.rst among them) runs, and prints what the page says."""
    import doctest
    ran = {}
    for path in _pages():
        with open(path, encoding='utf-8') as f:
            if '>>> ' not in f.read():
                continue
        result = doctest.testfile(path, module_relative=False, verbose=False,
                                  optionflags=doctest.ELLIPSIS)
        ran[os.path.relpath(path, ROOT)] = result
    assert ran['docs/guide/discoro.rst'].attempted >= 8
    assert {page: result.failed for page, result in ran.items() if result.failed} == {}


# ---------------------------------------------------------------- the gallery and the README

def test_every_example_has_a_gallery_page_that_includes_it():
    examples = sorted(name for name in os.listdir(os.path.join(ROOT, 'examples'))
                      if name.endswith('.py'))
    with open(os.path.join(ROOT, 'docs', 'examples', 'index.rst'), encoding='utf-8') as f:
        listed = set(re.findall(r'^   (\w+)$', f.read(), re.M))
    problems = []
    for name in examples:
        stem = name[:-3]
        where = 'the gallery page of ' + name
        page = os.path.join(ROOT, 'docs', 'examples', stem + '.rst')
        if not os.path.isfile(page):
            problems.append(name + ' has no gallery page in docs/examples')
            continue
        with open(page, encoding='utf-8') as f:
            text = f.read()
        with open(os.path.join(ROOT, 'examples', name), encoding='utf-8') as f:
            source = f.read()
        if '.. literalinclude:: ../../examples/' + name + '\n' not in text:
            problems.append(where + ' does not include the program')
        for part in ('\nRun it\n', 'What you see: '):
            if part not in text:
                problems.append('%s has no %r' % (where, part.strip()))
        # a program that uses the network is shown run on loopback (the
        # quickstart binds 127.0.0.1 itself; the ssh example needs a cloud)
        if 'disasyncoro' in source and name not in ('quickstart.py', 'discoro_ssh_ec2.py') \
                and 'ASYNCORO_NODE=127.0.0.1' not in text:
            problems.append(where + ' does not run it on loopback')
        if stem not in listed:
            problems.append(stem + ' is not in the toctree of the gallery index')
    assert problems == []


README_LINK = re.compile(r'<([^<>`]+)>`_')


def test_the_readme_is_short_and_its_links_are_built_pages(tmp_path):
    """The README keeps what the package is, the two commands, a first
    program and links; every link to docs/ is a page of the built site."""
    import subprocess
    import sys
    with open(os.path.join(ROOT, 'README.rst'), encoding='utf-8') as f:
        readme = f.read()
    assert len(readme.splitlines()) < 150
    # the two commands, exactly: the demo (tests/test_discoro.py runs its
    # program) and the tests (.ci/run is the whole CI)
    assert ('    python3 -m venv .venv && .venv/bin/pip install . && '
            '.venv/bin/python examples/quickstart.py\n') in readme
    assert '\n    bash .ci/run\n' in readme and os.path.isfile(os.path.join(ROOT, '.ci', 'run'))
    links = README_LINK.findall(readme)
    assert len(links) >= 10
    html = tmp_path / 'html'
    build = subprocess.run([sys.executable, '-m', 'sphinx', '-q', '-b', 'html',
                            os.path.join(ROOT, 'docs'), str(html)],
                           capture_output=True, timeout=240)
    assert build.returncode == 0, build.stderr.decode()[-3000:]
    missing = []
    for link in links:
        assert link.startswith('docs/') and link.endswith('.rst'), link
        page = html / (link[len('docs/'):-len('.rst')] + '.html')
        if not page.is_file():
            missing.append(link)
    assert missing == []


def test_the_state_diagrams_draw_only_moves_the_scheduler_allows():
    """docs/guide/states.rst draws the paths of jobs, nodes, servers and the
    computation as `A ──► B ──► C`: each arrow is a move the state tables of
    asyncoro.schedstate allow, and each state it names is one of them."""
    from asyncoro import schedstate
    tables = [(schedstate.JobState, schedstate.JOB_MOVES),
              (schedstate.NodeState, schedstate.NODE_MOVES),
              (schedstate.ServerState, schedstate.SERVER_MOVES),
              (schedstate.CompState, schedstate.COMP_MOVES)]
    with open(os.path.join(ROOT, 'docs', 'guide', 'states.rst'), encoding='utf-8') as f:
        blocks = re.findall(r'\.\. code-block:: text\n\n((?:   .*\n)+)', f.read())
    drawn = 0
    for block in blocks:
        paths = [re.sub(r'\(.*\)', '', line).split('──►') for line in block.splitlines()]
        names = {name.strip() for path in paths for name in path}
        owners = [(states, moves) for states, moves in tables
                  if names <= set(states.__members__)]
        assert len(owners) == 1, 'states %s are not all of one table' % sorted(names)
        states, moves = owners[0]
        for path in paths:
            for a, b in zip(path, path[1:]):
                assert states[b.strip()] in moves[states[a.strip()]], \
                    '%s -> %s is drawn but not allowed' % (a.strip(), b.strip())
                drawn += 1
    assert len(blocks) == 4 and drawn >= 25
