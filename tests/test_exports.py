"""Public names: each module's __all__ is exactly the names asyncoro 4.5
programs use from it (docs/reference), and the logger writes asyncoro's
line format."""

import io
import re
import sys

import asyncoro
import asyncoro.asyncfile
import asyncoro.netio
import asyncoro.sync


def test_core_all_is_asyncoro_4_5s():
    assert sorted(asyncoro.__all__) == sorted([
        'AsyncSocket', 'AsynCoroSocket', 'Coro', 'AsynCoro', 'Lock', 'RLock', 'Event',
        'Condition', 'Semaphore', 'HotSwapException', 'MonitorException', 'Location',
        'Channel', 'CategorizeMessages', 'AsyncThreadPool', 'AsyncDBCursor', 'Singleton',
        'logger', 'serialize', 'deserialize', 'unserialize', 'Logger'])
    for name in asyncoro.__all__:
        assert getattr(asyncoro, name) is not None
    assert asyncoro.AsynCoroSocket is asyncoro.AsyncSocket
    assert asyncoro.MsgTimeout == 10
    assert isinstance(asyncoro.__version__, str)


def test_asyncfile_all():
    assert sorted(asyncoro.asyncfile.__all__) == ['AsyncFile', 'AsyncPipe', 'Popen']


def test_coro_aliases():
    assert asyncoro.Coro.recv is asyncoro.Coro.receive
    assert asyncoro.Coro.suspend is asyncoro.Coro.sleep
    assert asyncoro.Coro.wakeup is asyncoro.Coro.resume


def test_singleton_ignores_later_arguments():
    class Thing(metaclass=asyncoro.Singleton):
        def __init__(self, x):
            self.x = x
    assert Thing(1) is Thing(2)
    assert Thing(3).x == 1


def test_serialize_round_trip():
    data = {'a': [1, 2.5, 'x'], 'b': (None, b'bytes')}
    assert asyncoro.deserialize(asyncoro.serialize(data)) == data
    assert asyncoro.unserialize(asyncoro.serialize(data)) == data


def test_logger_format_levels_and_ms():
    stream = io.StringIO()
    log = asyncoro.Logger('asyncoro-test-logger', stream=stream)
    log.debug('hidden %s', 1)
    log.info('shown %s', 2)
    log.setLevel(asyncoro.Logger.DEBUG)
    log.debug('now %d', 3)
    log.show_ms(True)
    log.warning('with ms')
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert re.fullmatch(r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d asyncoro-test-logger - shown 2', lines[0])
    assert lines[1].endswith(' asyncoro-test-logger - now 3')
    assert re.fullmatch(r'\S+ \d\d:\d\d:\d\d\.\d{3} asyncoro-test-logger - with ms', lines[2])
    assert (asyncoro.Logger.WARN, asyncoro.Logger.FATAL) == (30, 50)


def test_shared_logger_writes_to_stdout(capsys):
    asyncoro.logger.info('hello %s', 'world')
    assert capsys.readouterr().out.endswith(' asyncoro - hello world\n')


class _StdoutThatGoes(io.StringIO):
    """A sys.stdout that another thread's interpreter exit replaces with
    None right after it is first asked for its flush (between two reads)."""

    @property
    def flush(self):
        sys.stdout = None
        return super().flush


def test_a_logger_on_stdout_survives_stdout_going_away_midway(monkeypatch, capsys):
    # a WARNING from a daemon thread as the program ends: neither a lost
    # line's 'Logging error' traceback nor an AttributeError
    out = _StdoutThatGoes()
    monkeypatch.setattr(sys, 'stdout', out)
    asyncoro.logger.warning('as the program ends')
    asyncoro.logger.flush()
    monkeypatch.setattr(sys, 'stdout', None)
    asyncoro.logger.warning('after the end')
    asyncoro.logger.flush()
    assert out.getvalue().endswith(' asyncoro - as the program ends\n')
    assert 'Logging error' not in capsys.readouterr().err
