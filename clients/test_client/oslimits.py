"""Process limits that load tests hit before anything else does.

A thousand benchmark connections need a thousand descriptors on each side; the common soft
limit of 1024 would turn that into confusing connect errors, so entry points raise it.
"""

from __future__ import annotations

import resource


def raise_open_files_limit(wanted: int = 65536) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft
