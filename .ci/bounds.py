"""setup.py's dependency bounds, read without running setup.py.

    python .ci/bounds.py lowest X.Y     pins (name==lower bound) for Python X.Y
    python .ci/bounds.py spec test NAME the test extra's requirement for NAME

CI installs the smoke runs' packages with `pip install -c <lowest pins>`, so
the lower bounds setup.py states for each Python are the versions CI runs
there (tests/test_setup_bounds.py checks the pins were the versions installed).
Markers are evaluated with `packaging` for the Python named, whatever Python
runs this script.
"""

import ast
import os
import sys

from packaging.markers import Marker
from packaging.requirements import Requirement

SETUP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'setup.py')


def setup_keywords(path=SETUP):
    """The literal keyword arguments of the setup() call in `path`."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'setup':
            found = {}
            for keyword in node.keywords:
                try:
                    found[keyword.arg] = ast.literal_eval(keyword.value)
                except ValueError:      # not a literal (long_description=...): not ours
                    pass
            return found
    raise SystemExit('%s has no setup() call' % path)


def environment(python):
    """The marker environment of Python `python` ('3.13' or '3.13.0')."""
    parts = python.split('.')
    return {'python_version': '.'.join(parts[:2]),
            'python_full_version': python if len(parts) > 2 else python + '.0'}


def applies(requirement, python):
    return requirement.marker is None or requirement.marker.evaluate(environment(python))


def lower_bound(requirement):
    """The version of its one `>=` specifier."""
    lows = [spec.version for spec in requirement.specifier if spec.operator == '>=']
    if len(lows) != 1:
        raise SystemExit('%s: every requirement needs exactly one >= bound' % requirement)
    return lows[0]


def requirements(python, extra=None):
    keywords = setup_keywords()
    texts = keywords['install_requires'] if extra is None else keywords['extras_require'][extra]
    return [req for req in map(Requirement, texts) if applies(req, python)]


def main(argv):
    if len(argv) == 2 and argv[0] == 'lowest':
        for req in requirements(argv[1]):
            print('%s==%s' % (req.name, lower_bound(req)))
        return 0
    if len(argv) == 3 and argv[0] == 'spec':
        matches = [req for req in requirements('%d.%d' % sys.version_info[:2], argv[1])
                   if req.name.lower() == argv[2].lower()]
        if len(matches) != 1:
            raise SystemExit('the %s extra has no one requirement for %s' % (argv[1], argv[2]))
        print('%s%s' % (matches[0].name, matches[0].specifier))
        return 0
    raise SystemExit(__doc__)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
