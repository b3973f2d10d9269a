"""Warnings that point at the user's line, not at descend's or torch's wrappers."""
from __future__ import annotations

import os
import sys
import warnings


def _internal(filename: str) -> bool:
    import descend
    import torch

    roots = (os.path.dirname(descend.__file__) + os.sep, os.path.dirname(torch.__file__) + os.sep)
    return filename.startswith(roots) or filename.startswith("<frozen")


def warn_user(message: str, category: type[Warning] = RuntimeWarning) -> None:
    """``warnings.warn`` with the stack level of the first caller outside descend and torch."""
    frame = sys._getframe(1)  # warn_user's caller: stack level 2
    level = 2
    while frame is not None and _internal(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
