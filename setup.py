"""Install asyncoro: distributed communicating processes on gevent."""
import os
from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _read(name):
    with open(os.path.join(HERE, name), encoding='utf-8') as f:
        return f.read()


setup(
    name='asyncoro',
    version='4.5.6',
    description='Distributed communicating processes (asyncoro / discoro) on gevent',
    long_description=_read('README.rst'),
    long_description_content_type='text/x-rst',
    license='MIT',
    packages=['asyncoro'],
    # the monitor's pages and the Dockerfile live beside the module
    package_data={'asyncoro': ['data/*']},
    scripts=['scripts/discoronode.py', 'scripts/discoro.py', 'scripts/httpd.py'],
    python_requires='>=3.8',
    # Each lower bound is a release that installs from a wheel and passes CI on
    # the Pythons its marker names: CI's smoke runs install exactly these (see
    # .ci/bounds.py and tests/test_setup_bounds.py), so keep them real versions.
    install_requires=[
        # gevent before 23.7 needs setuptools' pkg_resources, which the
        # setuptools pip installs with it no longer has; 23.9 and 24.10 are
        # gevent's first releases with wheels for 3.12 and 3.13
        'gevent>=23.7.0,<27; python_version < "3.12"',
        'gevent>=23.9.1,<27; python_version >= "3.12" and python_version < "3.13"',
        'gevent>=24.10.1,<27; python_version >= "3.13"',
        'psutil>=5.9.4,<8',
        'cloudpickle>=2.2.0,<4',
        # bottle 0.12 imports cgi, which Python 3.13 removed
        'bottle>=0.12.25,<0.14; python_version < "3.13"',
        'bottle>=0.13.0,<0.14; python_version >= "3.13"',
    ],
    extras_require={
        # playwright drives the system's Chromium in the monitor's browser test
        # prometheus_client's text parser checks the monitor's /metrics (0.16 and later
        # install on Python 3.8 to 3.13; pip picks the newest one the Python takes);
        # hypothesis drives the state-machine and fuzz tests (6.70 installs on 3.8)
        'test': ['pytest>=7.4,<10', 'playwright>=1.40,<2', 'prometheus_client>=0.16,<1',
                 'hypothesis>=6.70,<7'],
        # the documentation (python -m sphinx -W docs docs/_build/html)
        'docs': ['sphinx>=7.1,<9'],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3 :: Only',
        'Programming Language :: Python :: 3.8',
        'Programming Language :: Python :: 3.9',
        'Programming Language :: Python :: 3.10',
        'Programming Language :: Python :: 3.11',
        'Programming Language :: Python :: 3.12',
        'Programming Language :: Python :: 3.13',
        'Topic :: System :: Distributed Computing',
    ],
)
