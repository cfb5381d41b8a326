"""The development SECRET_KEY: random per checkout, kept in the var folder.

A key written in the source signs every development instance's sessions and tokens
alike, so anyone who reads the source could mint them. Instead each checkout draws
its own key once and keeps it in `<KESTREL_VAR_DIR>/secret_key` (mode 0600), so
logins survive a restart.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from django.core.management.utils import get_random_secret_key

FILE_NAME = "secret_key"
# Keys that were public (Kestrel's own, removed; Django's startproject marks its keys
# "django-insecure-"): refused whatever DEBUG says.
PUBLIC_KEY_PREFIX = "django-insecure"


def development_secret_key(var_dir: Path) -> str:
    """The key in `var_dir`, drawn and stored on first use.

    The web server, the worker and the scheduler start together under `make run`:
    the file appears complete or not at all (written aside, then hard-linked into
    place, which fails if another process got there first), so they all read one key.
    """
    path = Path(var_dir) / FILE_NAME
    key = _read(path)
    if key:
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, draft = tempfile.mkstemp(prefix=".secret_key-", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(get_random_secret_key())
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another process stored its key first: that one is the key
    finally:
        os.unlink(draft)
    key = _read(path)
    if not key:
        raise RuntimeError(f"{path} is empty: delete it to draw a new development key")
    return key


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""
