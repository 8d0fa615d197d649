"""asyncoro: distributed communicating processes on gevent, with asyncoro
4.5's API.

This is the package's face: `import asyncoro` gives the core (coroutines,
the runtime, local channels, synchronisation, sockets, serialization; see
asyncoro.core, asyncoro.channel, asyncoro.sync, asyncoro.netio). `import
asyncoro.disasyncoro as asyncoro` gives all of it with the distributed
runtime; `from asyncoro.discoro import *` the scheduler and computations.

`asyncoro.MsgTimeout`, read or assigned here, is the package's one
MsgTimeout (it lives in asyncoro.core).

The documentation is the Sphinx site in the project's docs/ folder: a user
guide (docs/guide), the reference of every public name, built from these
docstrings (docs/reference), and docs/troubleshooting.rst.
"""

import sys

from asyncoro.channel import CategorizeMessages, Channel
from asyncoro.core import (AsynCoro, Coro, HotSwapException, Logger, MonitorException,
                           Singleton, _ShowsMsgTimeout, logger)
# also here, outside __all__: the version, and the errors this package raises itself
from asyncoro.core import WrongContextError, __version__               # noqa: F401
from asyncoro.failure import AsyncoroError                              # noqa: F401
from asyncoro.netio import (AsynCoroSocket, AsyncSocket, Location, deserialize, serialize,
                            unserialize)
from asyncoro.sync import (AsyncDBCursor, AsyncThreadPool, Condition, Event, Lock, RLock,
                           Semaphore)

__all__ = ['AsyncSocket', 'AsynCoroSocket', 'Coro', 'AsynCoro', 'Lock', 'RLock',
           'Event', 'Condition', 'Semaphore', 'HotSwapException', 'MonitorException',
           'Location', 'Channel', 'CategorizeMessages', 'AsyncThreadPool',
           'AsyncDBCursor', 'Singleton', 'logger', 'serialize', 'deserialize',
           'unserialize', 'Logger']

sys.modules[__name__].__class__ = _ShowsMsgTimeout
