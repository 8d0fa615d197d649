"""setup.py's dependency bounds against what is installed.

Every requirement has a lower and an upper bound; the installed versions meet
the requirements that apply to this Python; and in CI's smoke runs, which
install the lowest versions setup.py allows (ASYNCORO_LOWEST_DEPS=1, see
.ci/smoke), the installed versions *are* those lower bounds. So a lower bound
cannot claim a version that CI never ran.
"""

import ast
import os
import sys
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup_keywords():
    with open(os.path.join(ROOT, 'setup.py'), encoding='utf-8') as f:
        tree = ast.parse(f.read())
    call = next(node for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'setup')
    found = {}
    for keyword in call.keywords:
        try:
            found[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:      # long_description=_read(...): not a literal
            pass
    return found


SETUP = _setup_keywords()
INSTALL = [Requirement(text) for text in SETUP['install_requires']]
EXTRAS = {name: [Requirement(text) for text in texts]
          for name, texts in SETUP['extras_require'].items()}
HERE = '%d.%d' % sys.version_info[:2]


def _applies(req):
    return req.marker is None or req.marker.evaluate()


def _lower(req):
    lows = [Version(spec.version) for spec in req.specifier if spec.operator == '>=']
    assert len(lows) == 1, '%s needs exactly one >= bound' % req
    return lows[0]


def _installed(name):
    try:
        return Version(metadata.version(name))
    except metadata.PackageNotFoundError:
        return None


@pytest.mark.parametrize('req', INSTALL + [r for reqs in EXTRAS.values() for r in reqs],
                         ids=str)
def test_every_requirement_is_bounded_both_ways(req):
    assert _lower(req)
    assert [spec for spec in req.specifier if spec.operator == '<'], \
        '%s has no upper bound (<)' % req


def test_exactly_one_requirement_per_dependency_applies_on_every_supported_python():
    for minor in range(8, 15):
        python = '3.%d' % minor
        env = {'python_version': python, 'python_full_version': python + '.0'}
        names = [req.name for req in INSTALL
                 if req.marker is None or req.marker.evaluate(env)]
        assert sorted(names) == sorted({req.name for req in INSTALL}), python


def test_a_classifier_for_each_supported_version_and_none_other():
    listed = sorted((c.rsplit(' :: ', 1)[1] for c in SETUP['classifiers']
                     if c.startswith('Programming Language :: Python :: 3.')),
                    key=Version)
    assert SETUP['python_requires'] == '>=%s' % listed[0]
    assert listed == ['3.%d' % minor for minor in range(8, 8 + len(listed))]


@pytest.mark.parametrize('req', INSTALL, ids=str)
def test_installed_versions_meet_setup_py(req):
    if not _applies(req):
        pytest.skip('not for Python %s' % HERE)
    version = _installed(req.name)
    assert version is not None, '%s is not installed' % req.name
    assert req.specifier.contains(version, prereleases=True), \
        '%s %s is installed; setup.py asks for %s' % (req.name, version, req)


@pytest.mark.skipif(os.environ.get('ASYNCORO_LOWEST_DEPS') != '1',
                    reason='only in the smoke runs, which install the lowest versions')
@pytest.mark.parametrize('req', INSTALL, ids=str)
def test_the_lowest_versions_are_the_ones_installed(req):
    if not _applies(req):
        pytest.skip('not for Python %s' % HERE)
    assert _installed(req.name) == _lower(req)
