"""Child processes that end with their parent (Linux), so no killed parent leaves work running."""
from __future__ import annotations

import signal


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (PR_SET_PDEATHSIG).

    True where it took effect; elsewhere (not Linux) False, and the caller relies on its
    own checks."""
    try:
        import ctypes
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(sig)) == 0
    except (OSError, AttributeError):
        return False
