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
    install_requires=[
        'gevent>=22.10,<27',
        'psutil>=5.9,<8',
        'cloudpickle>=2.2,<4',
        'bottle>=0.12.25,<0.14',
    ],
    extras_require={
        # playwright drives the system's Chromium in the monitor's browser test
        'test': ['pytest>=7.4,<10', 'playwright>=1.40,<2'],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: System :: Distributed Computing',
    ],
)
