"""The names the job's string options accept, as ``Literal`` types for signatures and
stubs, so a type checker catches ``copy_mode="nonsense"``. They restate the core's
``names!`` tables (``blockmirror._native.OPTION_NAMES``); tests/test_typing.py checks that
they agree."""

from __future__ import annotations

from typing import Literal

__all__ = ["CopyMode", "ErrorPolicy", "ImageFormat", "SyncMode"]

#: ``sync``: what the copy starts from (the whole disk, the allocated ranges, nothing).
SyncMode = Literal["full", "top", "none"]
#: ``copy_mode``: guest writes are copied later (``background``) or before they return.
CopyMode = Literal["background", "write-blocking"]
#: ``on_source_error`` / ``on_target_error``.
ErrorPolicy = Literal["report", "ignore", "stop", "enospc"]
#: ``format`` / ``target_format``: an image format to use instead of probing it.
ImageFormat = Literal["raw", "qcow2"]
