"""Stopping ``dwgf predict`` cleanly on SIGTERM and SIGINT.

A scheduler's preemption sends SIGTERM, waits, then kills; Ctrl-C sends SIGINT. ``dwgf predict``
answers both the same way: the signal only sets a flag, and the run stops at the next check, after
the flow iteration under way (:func:`check_stop`, called by every solver once per iteration and
before every batch). Items already written stay complete; the batch that was cut short is not
written and is recomputed by the next run of the same command. A second SIGINT stops at once.

Under several processes the first one forwards the signal to the processes it launched, and a
launched process on Linux asks the kernel for SIGTERM when its launcher dies (even by SIGKILL), so
no rank is left running and writing on its own.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, Optional

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequested(BaseException):
    """Raised by :func:`check_stop` after a SIGTERM or SIGINT; the ``dwgf`` command exits with 128 + signal.

    A ``BaseException`` (like ``KeyboardInterrupt``), so that code catching ``Exception`` does not
    swallow it.
    """

    def __init__(self, signum: int, immediate: bool = False):
        self.signum = int(signum)
        self.immediate = immediate
        super().__init__(f"stopped by {signal.Signals(signum).name}")


_requested: Optional[int] = None
_children: list[Any] = []
_previous: dict[int, Any] = {}


def stop_requested() -> Optional[int]:
    """The signal that asked the run to stop, or ``None``."""
    return _requested


def check_stop() -> None:
    """Raises :class:`StopRequested` if a stop signal arrived. Cheap: call it once per iteration."""
    if _requested is not None:
        raise StopRequested(_requested)


def _is_launched_process() -> bool:
    """Whether this process was started by a launcher (Lightning's, torchrun) as one rank of several."""
    return "LOCAL_RANK" in os.environ


def _handler(signum: int, frame: Any) -> None:
    global _requested
    again = _requested is not None
    _requested = signum
    for child in list(_children):
        try:
            child.send_signal(signum)
        except (OSError, ValueError):
            pass
    if again and signum == signal.SIGINT and not _is_launched_process():
        raise StopRequested(signum, immediate=True)  # a second Ctrl-C: stop now, mid-iteration


def install() -> None:
    """Makes SIGTERM and SIGINT request a stop (see the module's docstring). Main thread only."""
    global _requested
    _requested = None
    _children.clear()
    for signum in STOP_SIGNALS:
        previous = signal.signal(signum, _handler)
        _previous.setdefault(signum, previous)
    if _is_launched_process():
        _die_with_parent()


def reinstall() -> None:
    """Puts dwgf's handlers back (Lightning installs its own SIGTERM handler when a run starts)."""
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not _handler:
            signal.signal(signum, _handler)


def add_children(processes: list[Any]) -> None:
    """Processes (``subprocess.Popen``) that receive the stop signals this one receives."""
    _children.extend(p for p in processes if p not in _children)


def uninstall() -> None:
    """Restores the handlers that were there before :func:`install`."""
    global _requested
    for signum, previous in _previous.items():
        signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
    _previous.clear()
    _children.clear()
    _requested = None


def _die_with_parent() -> None:
    """Linux: deliver SIGTERM to this process when its parent (the launcher) dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher died before the request: stop now
        os.kill(os.getpid(), signal.SIGTERM)
