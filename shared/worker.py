"""One way to run work in a forked child process, for every child ferry starts.

ferry forks children for Python work that must run beside its own on another core (hashing during the
export walk, hashing during verify, writing restore's links): threads would share one interpreter lock.
Three hand-written fork-and-pipe protocols used to do this, and each had the same flaws: a child killed
with its parent never noticed (it still held the write end of its own pipe, so it never saw EOF), it kept
the caller's stdout open (``ferry export -o - | ssh …`` then hung forever), and errors came back as bare
strings.  :class:`Worker` does it once:

* the child dies with its parent: ``PR_SET_PDEATHSIG`` sends it SIGTERM when the parent goes (even on
  SIGKILL), it checks the parent is still there right after setting it (the parent may have died first),
  and it closes every parent end of every worker pipe, so a read of its pipe ends with EOF too;
* the child does not hold the caller's stdin and stdout (both become ``/dev/null``); stderr stays, for logs;
* SIGTERM in the child raises ``SystemExit``, so its ``finally`` blocks run (a writer removes its temp
  files) before it exits; SIGINT is ignored there: Ctrl-C is the parent's to handle, which then aborts it;
* errors come back one way: a :class:`~ferry.shared.errors.FerryError` raised in the child is raised again in
  the parent with its code, message, hint and exit code; anything else as :class:`WorkerError`.

Contract: ``target(channel, *args)`` runs in the child; it reads what the parent :meth:`Worker.send`\\ s with
``channel.recv()`` and sends payloads back with ``channel.send()``; its return value is the worker's
result.  In the parent, :meth:`Worker.recv` returns the next payload, :meth:`Worker.messages` yields them
until the child ends, :meth:`Worker.result` waits for the return value, and :meth:`Worker.abort` stops the
child (SIGTERM, then SIGKILL after a grace period).  Create workers before the parent starts threads: a
fork copies only the thread that forks.  Create them on a thread that outlives them (the main thread):
the kernel's death signal fires when the forking *thread* exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

# multiprocessing, ctypes and pickle are imported where a worker starts: every command that may fork
# imports this module, and a command that fails at once (a missing bundle) must not pay 20 ms for them

from .errors import FerryError

#: prctl(2) option: the signal the kernel sends this process when its parent thread exits
_PR_SET_PDEATHSIG = 1
_PAYLOAD, _RESULT, _ERROR = 0, 1, 2

#: the parent ends of every live worker's pipe: a child forked later closes them too, so that no child
#: keeps another one's pipe open (that child would then never see EOF)
_parent_ends: weakref.WeakSet[Connection] = weakref.WeakSet()


class WorkerError(RuntimeError):
    """A worker failed with something that is not a :class:`FerryError` (a bug), or died."""


class ChildFailed(FerryError):
    """A :class:`FerryError` of a worker whose class could not be sent back: the same code and hint."""

    def __init__(self, code: str, exit_code: int, message: str, hint: str) -> None:
        super().__init__(message, hint=hint)
        self.__dict__["code"] = code
        self.__dict__["exit_code"] = exit_code


def _rebuild(cls: type[FerryError], state: dict[str, Any]) -> FerryError:
    # not ``cls(...)``: constructors take other arguments (a path, a list of broken images); the state
    # (message, hint and whatever else the error carries) is what the CLI renders
    e = cls.__new__(cls)
    Exception.__init__(e, state.get("message", ""))
    e.__dict__.update(state)
    return e


class Channel:
    """The child's end: what the parent sends, and payloads back."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def recv(self) -> Any:
        return self._conn.recv()

    def send(self, payload: Any) -> None:
        self._conn.send((_PAYLOAD, payload))


class Worker:
    def __init__(self, target: Callable[..., Any], *args: Any, name: str) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe(duplex=True)
        self.name = name
        self._done = False
        self._proc = ctx.Process(
            target=_child_main, args=(target, args, child, os.getpid()), daemon=True, name=name
        )
        _parent_ends.add(self._conn)  # before the fork: the child closes its copy of this end too
        # SIGTERM waits (blocked) until the child has its own handler: before that it would run the
        # parent's (the CLI's), in the child
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            self._proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        child.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def send(self, message: Any) -> None:
        """Send to the child.  A child that stopped on an error no longer reads: the error is raised by
        the next :meth:`recv` or :meth:`result`, not here."""
        with contextlib.suppress(BrokenPipeError, ConnectionError, OSError):
            self._conn.send(message)

    def recv(self) -> Any:
        """The next payload; raises the child's error, or :class:`WorkerError` if it ended instead."""
        kind, value = self._next()
        if kind != _PAYLOAD:
            self._finish()
            raise WorkerError(f"{self.name} process ended while a reply was expected")
        return value

    def messages(self) -> Iterator[Any]:
        """Every payload until the child ends (its result is kept for :meth:`result`)."""
        while True:
            kind, value = self._next()
            if kind == _RESULT:
                self._result = value
                self._finish()
                return
            yield value

    def result(self) -> Any:
        """Wait for the child's return value (payloads still in the pipe are dropped) and reap it."""
        if self._done:
            return getattr(self, "_result", None)
        for _ in self.messages():
            pass
        return self._result

    def _next(self) -> tuple[int, Any]:
        try:
            kind, value = self._conn.recv()
        except (EOFError, OSError):
            self._finish()
            raise WorkerError(
                f"{self.name} process ended unexpectedly (exit code {self._proc.exitcode})"
            ) from None
        if kind == _ERROR:
            self._finish()
            if isinstance(value, tuple) and len(value) == 2:
                raise _rebuild(*value)
            code, exit_code, message, hint = value
            if code is None:
                raise WorkerError(f"{self.name} process: {message}")
            raise ChildFailed(code, exit_code, message, hint)
        return kind, value

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._proc.join()
            self._conn.close()

    def abort(self) -> None:
        """Stop the child now: SIGTERM (it cleans up and exits), SIGKILL if it has not within 5 s."""
        if self._done:
            return
        self._done = True
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()
        self._proc.join()
        self._conn.close()


def _child_main(target: Callable[..., Any], args: tuple[Any, ...], conn: Connection, parent: int) -> None:
    for end in list(_parent_ends):
        with contextlib.suppress(OSError):
            end.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    _die_with_parent(parent)
    _detach_stdio()
    try:
        result = target(Channel(conn), *args)
        message: tuple[int, Any] = (_RESULT, result)
    except FerryError as e:
        message = (_ERROR, (type(e), dict(e.__dict__)))
        fallback: tuple[int, Any] = (_ERROR, (e.code, e.exit_code, e.message, e.hint))
    except BaseException as e:  # the parent raises it: a child has no one else to tell
        message = fallback = (_ERROR, (None, 0, f"{type(e).__name__}: {e}", ""))
    else:
        fallback = message
    import pickle

    with contextlib.suppress(OSError):
        try:
            conn.send(message)
        except (TypeError, AttributeError, pickle.PicklingError):  # an error carrying what cannot travel
            conn.send(fallback)
    conn.close()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)


def _die_with_parent(parent: int) -> None:
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: EOF on the pipe still ends the child's reads
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _detach_stdio() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        with contextlib.suppress(OSError):
            os.dup2(null, fd)
    os.close(null)


__all__ = ["Channel", "ChildFailed", "Worker", "WorkerError"]
