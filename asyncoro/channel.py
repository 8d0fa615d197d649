"""Channels: broadcast to subscribers; and sorting a coroutine's messages.

What it owns: `Channel` (local; asyncoro.disasyncoro adds the remote side)
and `CategorizeMessages`. Both are re-exported by `asyncoro`.

How it works: a channel keeps an ordered set of subscribers (coroutines or
other channels) and forwards each message with their `send`/`deliver`, so a
subscriber only needs those two methods; remote ones come from the
distributed layer. State changes run in the runtime's hub thread
(`AsynCoro._run_here`), so the main program may use a channel too.
"""

import collections
import inspect
import logging
import time

import gevent
import gevent.event

from asyncoro.failure import spawn
from asyncoro.core import (AsynCoro, Coro, _get_ident, _location_copy, _remote_factory,
                           _runtime)

__all__ = ['Channel', 'CategorizeMessages']

log = logging.getLogger(__name__)


def _valid_transform(transform):
    """True if `transform` can be called as f(channel_name, message)."""
    try:
        inspect.signature(transform).bind('name', 'message')
    except (TypeError, ValueError):
        return False
    return True


class Channel:
    """Broadcasts each message to its subscribers: coroutines or other
    channels (local, and with asyncoro.disasyncoro remote too).

    :param name: the channel's name, unique in its process (a duplicate is
        warned about and not put in the process table); it should start
        with a letter or digit.
    :param transform: ``f(channel_name, message)``, whose value replaces
        each message; a value of None drops the message.
    :raises TypeError: for a name that is not a non-empty string.
    """

    def __init__(self, name, transform=None):
        if not isinstance(name, str) or not name:
            raise TypeError('Channel name must be a non-empty string, not %r' % (name,))
        if not name[0].isalnum():
            stripped = name.lstrip('~!@#$%^&*()-_=+[]{}|;:,.<>/? ')
            log.warning('Channel name %r should start with a letter or digit; using %r',
                        name, stripped)
            name = stripped or name
        self._name = name
        self._rt = _runtime()
        self._transform = None
        if transform is not None:
            self.set_transform(transform)
        self._subscribers = {}      # ordered set: subscriber -> True
        self._sub_event = None      # set when a subscriber is added (deliver(n) waits)
        self._backlog = None        # messages from peers for the transform, in order
        self._closed = False
        self._rt._run_here(self._rt._add_channel, self)

    @property
    def name(self):
        return self._name

    @property
    def location(self):
        return _location_copy(self._rt)

    def __repr__(self):
        loc = self._rt.location
        return '~%s' % self._name if loc is None else '~%s@%s' % (self._name, loc)

    __str__ = __repr__

    def __eq__(self, other):
        return (self is other or isinstance(other, Channel) and
                self._name == other._name and self.location == other.location)

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(self._name)

    def __reduce__(self):
        return (_rebuild_channel, (self._name, self.location))

    _remote = False     # True for references to channels of other processes

    def set_transform(self, transform):
        """Replace the transform.

        :param transform: ``f(channel_name, message)`` -> the message to
            send, or None to drop it; None: no transform.
        :returns: 0, or -1 (with a warning) for a transform that cannot be
            called that way, which is then ignored.
        """
        if transform is not None and not (callable(transform) and _valid_transform(transform)):
            log.warning('transform %r of channel %s ignored: it must take '
                        '(channel_name, message)', transform, self._name)
            return -1
        self._transform = transform
        return 0

    def subscribe(self, subscriber, timeout=None):
        """Add a subscriber; subscribing again has no effect.

        :param subscriber: a Coro or a Channel (local or remote).
        :param timeout: accepted for asyncoro 4.5's signature.
        :returns: 0, or -1 for an invalid subscriber.

        Call form: ``yield channel.subscribe(coro)``."""
        if not isinstance(subscriber, (Coro, Channel)) or subscriber is self:
            log.warning('channel %s: %r cannot subscribe', self._name, subscriber)
            return -1
        return self._rt._run_here(self._add_subscriber, subscriber)

    def _add_subscriber(self, subscriber):
        self._subscribers[subscriber] = True
        event, self._sub_event = self._sub_event, None
        if event is not None:
            event.set()
        return 0

    def unsubscribe(self, subscriber, timeout=None):
        """Remove a subscriber.

        :returns: 0, or -1 if it was not subscribed.
        """
        return self._rt._run_here(self._remove_subscriber, subscriber)

    def _remove_subscriber(self, subscriber):
        if self._subscribers.pop(subscriber, None) is None:
            return -1
        return 0

    def _transformed(self, message):
        if self._transform is None:
            return message
        try:
            return self._transform(self._name, message)
        except Exception:    # a failing user transform drops that message only
            log.warning('transform of channel %s failed; message dropped', self._name,
                        exc_info=True)
            return None

    def send(self, message):
        """Transform `message` and send it to every subscriber. Never blocks;
        safe from any thread. A subscriber that cannot be sent to is dropped.

        :returns: 0 (also when the transform dropped the message).
        """
        rt = self._rt
        if _get_ident() != rt._tid:
            rt._call_threadsafe(self.send, message)
            return 0
        message = self._transformed(message)
        if message is None and self._transform is not None:    # dropped by the transform
            return 0
        failed = None
        for subscriber in self._subscribers:
            if subscriber.send(message) < 0:
                failed = failed or []
                failed.append(subscriber)
        for subscriber in failed or ():
            log.debug('channel %s: dropping subscriber %s (send failed)', self._name, subscriber)
            self._subscribers.pop(subscriber, None)
        return 0

    @property
    def closed(self):
        """Whether the channel was closed (a reference to one of another
        process: False)."""
        return self._closed

    def forget_subscribers_at(self, location):
        """The runtime at `location` went: its coroutines and channels are
        subscribers no more. Call it in the hub thread."""
        for sub in [s for s in self._subscribers
                    if getattr(s, '_remote', False) and s.location == location]:
            self._subscribers.pop(sub, None)

    def send_from_peer(self, message):
        """`send`, for a message from another process, read in the hub
        greenlet: a transform (user code, which may block) runs in a greenlet
        of this channel's own, taking the messages in the order they came.
        Never blocks; call it in the hub thread."""
        if self._transform is None:
            self.send(message)
            return
        if self._backlog is None:
            self._backlog = collections.deque()
            spawn(self._send_backlog)
        self._backlog.append(message)

    def _send_backlog(self):
        backlog = self._backlog
        try:
            while backlog:
                self.send(backlog.popleft())
        finally:
            self._backlog = None

    def deliver(self, message, timeout=None, n=0):
        """Acknowledged send: wait for at least `n` subscribers, then deliver
        to all of them (remote ones and sub-channels in parallel). Blocks the
        calling coroutine.

        :param timeout: seconds to wait at most, for the subscribers and the
            deliveries; None: no limit.
        :param n: the subscribers to wait for (0: none).
        :returns: how many coroutines got the message, those of sub-channels
            included; 0 on timeout, when fewer than `n` subscribe, or when the
            transform drops it; -1 for an invalid `n`.

        Call form: ``count = yield channel.deliver(msg, n=2)``."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            log.warning('channel %s: deliver needs n >= 0, not %r', self._name, n)
            return -1
        return self._rt._run_here(self._deliver, message, timeout, n)

    def _deliver(self, message, timeout, n):
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self._subscribers) < n:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return 0
            if self._sub_event is None:
                self._sub_event = gevent.event.Event()
            self._sub_event.wait(left)
        message = self._transformed(message)
        if message is None and self._transform is not None:    # dropped by the transform
            return 0
        count = 0
        others = []
        for subscriber in list(self._subscribers):
            if isinstance(subscriber, Coro) and not subscriber._remote:
                if subscriber.deliver(message) == 1:
                    count += 1
                else:
                    self._subscribers.pop(subscriber, None)
            else:     # channels and remote coroutines: in parallel
                left = None if deadline is None else max(deadline - time.monotonic(), 0)
                others.append(spawn(subscriber.deliver, message, left))
        if others:
            left = None if deadline is None else max(deadline - time.monotonic(), 0)
            gevent.joinall(others, timeout=left)
            for job in others:
                if job.successful() and isinstance(job.value, int) and job.value > 0:
                    count += job.value
                else:
                    job.kill(block=False)
        return count

    def register(self):
        """Make this channel visible to `Channel.locate` from other processes.

        :returns: 0, or -1 if a live channel has registered that name.
        """
        return self._rt._run_here(self._rt._register, 'channel', self._name, self)

    def unregister(self):
        """Withdraw `register`.

        :returns: 0, or -1 if it was not registered.
        """
        return self._rt._run_here(self._rt._unregister, 'channel', self._name, self)

    @staticmethod
    def locate(name, location=None, timeout=None):
        """Find a channel by name: any channel of this process with that
        name, else a registered one at `location` (or, with
        asyncoro.disasyncoro, at any peer). Blocks the calling coroutine.

        :param timeout: seconds to wait at most; None: no limit.
        :returns: the Channel, or None on timeout.

        Call form: ``channel = yield Channel.locate('news')``."""
        rt = _runtime()
        channel = rt._channels.get(name)
        if channel is not None:
            return channel
        return rt._run_here(rt._locate, 'channel', name, location, timeout)

    def close(self):
        """Unregister the channel, drop every subscriber and leave the
        process table."""
        self._rt._run_here(self._close)

    def _close(self):
        self._closed = True
        self._subscribers.clear()
        self._rt._unregister('channel', self._name, self)
        if self._rt._channels.get(self._name) is self:
            del self._rt._channels[self._name]


def _rebuild_channel(name, location):
    """Unpickle a Channel reference: the local channel of that name if it
    lives here, else a remote reference."""
    rt = AsynCoro._instance
    if rt is not None and location == rt.location:
        channel = rt._channels.get(name)
        if channel is not None:
            return channel
    return _remote_factory('channel')(name, location)




# ---------------------------------------------------------------- categories

class CategorizeMessages:
    """Sorts a coroutine's incoming messages into categories, so that it
    can receive them by category.

    :param coro: the coroutine whose messages are sorted (the one that
        calls `receive`).
    :raises TypeError: if `coro` is not a Coro.
    """

    def __init__(self, coro):
        if not isinstance(coro, Coro):
            raise TypeError('CategorizeMessages needs a Coro, not %r' % (coro,))
        self._coro = coro
        self._categorizers = []
        self._sorted = {}      # category -> deque of messages

    def add(self, categorize):
        """Add a function that gives a message's category; the newest is
        asked first.

        :param categorize: ``f(message)`` -> a hashable category, or None.
        :returns: 0, or -1 if it cannot be called with one argument.
        """
        try:
            inspect.signature(categorize).bind('message')
        except (TypeError, ValueError):
            log.warning('categorize function %r must take one argument', categorize)
            return -1
        if categorize not in self._categorizers:
            self._categorizers.insert(0, categorize)
        return 0

    def remove(self, categorize):
        """Remove a function added earlier.

        :returns: 0, or -1 if it was not added.
        """
        if categorize in self._categorizers:
            self._categorizers.remove(categorize)
            return 0
        return -1

    def _category(self, message):
        for categorize in self._categorizers:
            try:
                category = categorize(message)
            except Exception:    # a failing categorizer does not categorize this one
                log.warning('categorize function %r failed on %r', categorize, message,
                            exc_info=True)
                continue
            if category is not None:
                return category
        return None

    def receive(self, category=None, timeout=None, alarm_value=None):
        """The next message of `category`, receiving and sorting new
        messages as needed (also ``recv``). Blocks the calling coroutine.

        :param category: the category; None: messages no function
            categorized.
        :param timeout: seconds to wait at most; None: no limit.
        :returns: the message, or `alarm_value` on timeout.

        Call form: ``msg = yield categories.receive('a')``."""
        queue = self._sorted.get(category)
        if queue:
            return queue.popleft()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0)
            message = self._coro._receive_blocking(left, _CATEGORY_ALARM)
            if message is _CATEGORY_ALARM:
                return alarm_value
            found = self._category(message)
            if found == category:
                return message
            self._sorted.setdefault(found, collections.deque()).append(message)

    recv = receive


_CATEGORY_ALARM = object()

