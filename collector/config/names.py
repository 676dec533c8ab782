"""Whether a server's id can name its files.

A server id becomes the archive's file name (`collector.transfer.download.archive_name`) and, while
the archive downloads, that name plus `.part`. The id comes from the inventory today and
from CloudDC's own server listing later; both check it here, where it enters, not where
the file is opened.
"""

from __future__ import annotations

import unicodedata

# What `archive_name` and the partial file add to the id; tests/test_replies.py ties them.
LONGEST_SUFFIX = "-dump.tar.gz.part"
MAX_NAME_BYTES = 255  # NAME_MAX on Linux, macOS and the usual file systems; counted in bytes
MAX_ID_CHARS = 128
MAX_ID_BYTES = MAX_NAME_BYTES - len(LONGEST_SUFFIX.encode())


def check_file_name(name: str) -> str | None:
    """Why `name` is unsafe as a file name on its own (`"it contains a slash"`), or None.

    Refused: empty; more than `MAX_ID_CHARS` characters, or more than `MAX_ID_BYTES` bytes
    as UTF-8 (with the suffix it must fit in 255 bytes); slashes and backslashes; `..`
    anywhere; control characters (C0, DEL, C1) and line separators; format characters
    (bidi overrides, zero-width), which make a name display as another; lone surrogates,
    which cannot be encoded; a leading `-` (read as an option by tools) or `.` (hidden, or `.` itself).
    """
    if not name:
        return "it is empty"
    if len(name) > MAX_ID_CHARS:
        return f"it is longer than {MAX_ID_CHARS} characters"
    if "/" in name or "\\" in name:
        return "it contains a slash"
    if ".." in name:  # covers ".." itself
        return "it contains '..'"
    for char in name:
        category = unicodedata.category(char)
        if category == "Cc":  # C0, DEL and C1
            return "it contains a control character"
        if category == "Cf":
            return "it contains a format character (bidi or zero-width)"
        if category == "Cs":
            return "it contains a lone surrogate"
        if category in ("Zl", "Zp"):
            return "it contains a line break"
    if len(name.encode()) > MAX_ID_BYTES:
        return f"it is longer than {MAX_ID_BYTES} bytes as UTF-8 (file names are at most {MAX_NAME_BYTES})"
    if name[0] in "-.":  # covers "." itself
        return f"it starts with {name[0]!r}"
    return None
