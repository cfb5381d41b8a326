"""Tie a process to its parent: Linux SIGTERMs it when the parent dies, even by SIGKILL.

Used by gunicorn's workers (config/gunicorn.py: a worker whose master is gone exits
instead of holding the port) and by every child the development stack starts.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies; also a subprocess preexec_fn.

    Does nothing where prctl is not available (another OS).
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
