"""User ids that no other test in the run uses, so tests can share one running system."""

from __future__ import annotations

import itertools
import os

_ids = itertools.count(1_000_000 + (os.getpid() % 1000) * 10_000)


def new_user_id() -> int:
    return next(_ids)
