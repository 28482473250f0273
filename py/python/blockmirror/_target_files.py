"""The files around a mirror's target: whether this run created the target (so that a
failed run removes it, and only it), and which write-intent bitmap file it keeps."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Optional, Union

from blockmirror._native import BitmapError, InvalidArgument, is_nbd_uri

if TYPE_CHECKING:
    from blockmirror._mirror import Mirror

PathArg = Union[str, "os.PathLike[str]"]


class CreatedTarget:
    """A target file this run created (it did not exist before), so that a run that does
    not succeed can remove it, and only it: :meth:`remove` deletes the path only while it
    still names the same file (device and inode)."""

    def __init__(self, path: str) -> None:
        st = os.stat(path)
        self.path, self.identity = path, (st.st_dev, st.st_ino)

    def remove(self) -> bool:
        """Deletes the file; False when it is gone or was replaced by another file."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        if (st.st_dev, st.st_ino) != self.identity:
            return False
        os.unlink(self.path)
        return True


def open_tracking_creation(open_mirror: Callable[[], "Mirror"], target: str,
                           remove_on_interrupt: bool) -> "tuple[Mirror, Optional[CreatedTarget]]":
    """Runs ``open_mirror`` and says whether it created ``target`` (None: it existed).

    An interrupt (``KeyboardInterrupt``, any ``BaseException`` that is not an ``Exception``)
    can land after the native mirror created the file but before its creation was noted;
    then a target that did not exist before is removed here when ``remove_on_interrupt``.
    An ``Exception`` from ``open_mirror`` means it refused to open (e.g. the target exists),
    and nothing is removed."""
    # An NBD export is never created by the mirror: there is nothing to remove.
    existed = is_nbd_uri(target) or os.path.lexists(target)
    try:
        m = open_mirror()
        created = None if existed else CreatedTarget(target)
    except Exception:
        raise
    except BaseException:
        if not existed and remove_on_interrupt and os.path.lexists(target):
            os.unlink(target)
        raise
    return m, created


def bitmap_path_for(target: str, bitmap: Union[None, bool, PathArg], resume: bool) -> Optional[str]:
    """The bitmap file a mirror uses: none (``bitmap`` None/False without ``resume``), the
    default ``TARGET.bmbitmap`` (``True``, or ``resume`` alone), or the path given. An NBD
    target has no default: ``InvalidArgument``."""
    if (bitmap is None or bitmap is False) and not resume:
        _refuse_leftover_bitmap(target)
        return None
    if bitmap is None or isinstance(bitmap, bool):
        if is_nbd_uri(target):
            raise InvalidArgument("an NBD target needs an explicit bitmap path (bitmap=PATH, --bitmap PATH)")
        return target + ".bmbitmap"
    return os.fspath(bitmap)


def _refuse_leftover_bitmap(target: str) -> None:
    """A mirror without a bitmap into a target whose default bitmap file exists would make
    that file lie (it would no longer mark what differs): refuse, saying what to do."""
    leftover = target + ".bmbitmap"
    if not is_nbd_uri(target) and os.path.exists(leftover):
        exc = BitmapError(f"bitmap file {leftover} exists: a previous mirror of this target did not "
                          f"finish; pass resume=True (--resume) to copy only what it left to do, or "
                          f"remove the file to start over")
        exc.reason = "exists"
        raise exc
