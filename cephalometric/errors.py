"""One clear line for a user's mistake, never a traceback.

Scripts raise `UserError("what is wrong; how to fix it")` and wrap their `main` with `run_cli`,
which prints `error: <message>` to stderr and exits with status 2. Anything else is a bug and keeps
its traceback so it can be reported.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable, Optional, Sequence


class UserError(Exception):
    """A problem with the user's input or environment that the user can fix."""


def first_line(error: BaseException, default: Optional[str] = None,
               limit: Optional[int] = None) -> str:
    """The first line of `error`'s message (at most `limit` characters), for a one-line report;
    `default` (the exception's type name unless given) when it has none."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else (type(error).__name__ if default is None else default)
    return line if limit is None else line[:limit]


def run_cli(main: Callable[[Optional[Sequence[str]]], Optional[int]],
            argv: Optional[Sequence[str]] = None) -> int:
    """Run `main(argv)`; turn UserError into one line on stderr and exit status 2.

    SIGTERM (a `kill`, a scheduler ending the job) is handled like Ctrl-C: it raises in the
    program, so every clean-up on the way out runs and no temporary file is left behind.
    """
    previous = _terminate_like_interrupt()
    try:
        code = main(argv)
    except UserError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    except Terminated:
        print('terminated', file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`... | head`): say nothing more, and keep Python's exit-time flush
        # from raising again on the closed stdout. 141 is what a process killed by SIGPIPE returns.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return int(code or 0)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program was, so that its clean-ups run."""


_MAIN_PID = None


def _raise_terminated(signum, frame):
    if os.getpid() != _MAIN_PID:   # a forked worker (a pool, a data loader): end as usual
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated()


def _terminate_like_interrupt():
    """Install the SIGTERM handler (main thread only); returns the handler it replaced."""
    global _MAIN_PID
    if threading.current_thread() is not threading.main_thread():
        return None
    _MAIN_PID = os.getpid()
    return signal.signal(signal.SIGTERM, _raise_terminated)
