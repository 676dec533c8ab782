"""Whether a server's id can name its files.

A server id becomes the archive's file name (`collector.transfer.download.archive_name`) and, while
the archive downloads, that name plus `.part`. The id comes from the inventory today and
from CloudDC's own server listing later; both check it here, where it enters, not where
the file is opened.
"""

from __future__ import annotations

from collector.text import unsafe_char

# What `archive_name` and the partial file add to the id; tests/test_replies.py ties them.
LONGEST_SUFFIX = "-dump.tar.gz.part"
MAX_NAME_BYTES = 255  # NAME_MAX on Linux, macOS and the usual file systems; counted in bytes
MAX_ID_CHARS = 128
MAX_ID_BYTES = MAX_NAME_BYTES - len(LONGEST_SUFFIX.encode())


def segment_problem(text: str, *, max_chars: int, strict: bool) -> str | None:
    """Why `text` cannot be one path segment, ours to name a file or a URL's part, or None.

    The one check of ids that become a path segment: server ids (file names, `check_file_name`)
    and export ids (a URL's path, `collector.clouddc.replies.safe_export_id`). Refused in both:
    empty; more than `max_chars` characters; slashes and backslashes; `..` anywhere; the
    characters `collector.text.unsafe_char` always refuses. With `strict` (export ids) also
    whitespace and every character that is not printable, and ``.`` alone: the id goes into
    a URL with our token, where yarl would resolve ``.``, and nothing about it should need
    judgement. Without (server ids), spaces and private-use characters stay, since a server
    is named by people; a leading ``.`` is `check_file_name`'s to refuse, with its own words.
    """
    if not text:
        return "it is empty"
    if len(text) > max_chars:
        return f"it is longer than {max_chars} characters"
    if "/" in text or "\\" in text:
        return "it contains a slash"
    if strict and (text == "." or ".." in text):
        return "it is '.' or contains '..'"
    if ".." in text:  # covers ".." itself
        return "it contains '..'"
    found = unsafe_char(text, spaces=not strict, unprintable=not strict)
    if found is not None:
        return f"it contains {found[1]}"
    return None


def check_file_name(name: str) -> str | None:
    """Why `name` is unsafe as a file name on its own (`"it contains a slash"`), or None.

    Refused: what `segment_problem` refuses in a server id, at most `MAX_ID_CHARS`
    characters; more than `MAX_ID_BYTES` bytes as UTF-8 (with the suffix it must fit in 255
    bytes); a leading `-` (read as an option by tools) or `.` (hidden, or `.` itself).
    """
    problem = segment_problem(name, max_chars=MAX_ID_CHARS, strict=False)
    if problem:
        return problem
    if len(name.encode()) > MAX_ID_BYTES:
        return f"it is longer than {MAX_ID_BYTES} bytes as UTF-8 (file names are at most {MAX_NAME_BYTES})"
    if name[0] in "-.":  # covers "." itself
        return f"it starts with {name[0]!r}"
    return None
