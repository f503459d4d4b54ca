# Helpers shared by condorlab's HTCondor modules: reading and writing
# secret files (signing keys, tokens) atomically with owner-only permissions.
from __future__ import annotations

import os
import tempfile


def read_bytes(path: str) -> bytes | None:
    """Return the content of ``path`` or None when it does not exist."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_secret(path: str, content: bytes, mode: int = 0o600) -> None:
    """Write ``content`` to ``path`` atomically, readable by its owner only.

    The temporary file is created in the target directory with ``mode`` from
    the start and renamed over ``path``.
    """
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".condorlab-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        # A rename within one directory keeps the temporary file's mode, so
        # the secret is never readable by anyone else, not even for an instant.
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def fix_mode(path: str, mode: int = 0o600, check_mode: bool = False) -> bool:
    """Tighten ``path`` to ``mode``; return True when it had to (or, in check mode, would) change."""
    current = os.stat(path).st_mode & 0o7777
    if current == mode:
        return False
    if not check_mode:
        os.chmod(path, mode)
    return True
