"""The user's own files are hostile input too: whatever an inventory or a selection file holds,
`collector validate` answers with exit 0 or 2 (never 70), prints no raw control or bidi
character, and no line longer than `LINE_LIMIT` (issue 18)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from _strategies import DANGEROUS, PIECES, texts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.cli.main import main
from collector.text import LINE_LIMIT

# Any raw C0 control (a newline only ends a line), C1, bidi or line/paragraph separator.
RAW_UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
PROJECT = "0123456789abcdef0123456789abcdef"


def validate(path: Path, *extra: str) -> tuple[int, str]:
    """`collector validate -i PATH ...` in this process: its exit code and everything it printed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["validate", "-i", str(path), *extra])
        except SystemExit as exc:  # argparse's own exits
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue() + err.getvalue()


def assert_told_safely(code: int, printed: str) -> None:
    assert code in (0, 2), printed[:2000]
    for line in printed.split("\n"):
        assert not RAW_UNSAFE.search(line), ascii(line[:300])
        assert len(line) <= LINE_LIMIT, (len(line), ascii(line[:300]))


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8", "surrogatepass"))  # a lone surrogate becomes bad UTF-8
    return path


def structured(key: str, endpoint: str, server_id: str, name: str, tag: str) -> str:
    """An inventory shaped as users write one, the hostile text in its keys and values."""
    document = {
        "endpoint": endpoint,
        "project_id": PROJECT,
        "servers": [{"id": server_id, "name": name, "tags": {tag: name}}, {"id": server_id}],
        key: 1,
    }
    return yaml.safe_dump(document, allow_unicode=True)


TEMPLATES = [
    "projects: !<{0}> []\n",
    "{0}: 1\nprojects: []\n",
    "endpoint: {0}\nproject_id: " + PROJECT + "\nservers: [a]\n",
    "endpoint: https://{0}\nproject_id: " + PROJECT + "\nservers: [a]\n",
    "endpoint: https://clouddc.cn-east-3.myhuaweicloud.com\nproject_id: " + PROJECT + "\nservers: ['{0}']\n",
    "endpoint: https://clouddc.cn-east-3.myhuaweicloud.com\nproject_id: "
    + PROJECT
    + "\nservers: [{{id: a, name: '{0}'}}, {{id: a}}]\n",
    "endpoint: https://clouddc.cn-east-3.myhuaweicloud.com\nproject_id: "
    + PROJECT
    + "\nservers: [a]\ncollector: {{rate: '{0}'}}\n",
    "{0}",
]

# What a YAML file or a URL adds to the dangerous characters: IDNA edge cases, tags,
# anchors and aliases, flow syntax, percent-escapes of control bytes.
YAML_PIECES = [
    "xn--",
    "a" * 64,
    "!<",
    "!!python/object:os.system",
    "%1b",
    "%0A",
    "&a ",
    "*a",
    "{",
    "}",
    ": ",
    "- ",
    "'",
    "#",
]
pieces = texts(max_size=30, pieces=st.one_of(PIECES, st.sampled_from(YAML_PIECES)))


@pytest.mark.slow
@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    shape=st.one_of(
        st.builds(structured, pieces, pieces, pieces, pieces, pieces),
        st.builds(lambda template, text: template.format(text), st.sampled_from(TEMPLATES), pieces),
    ),
    selection=pieces,
)
def test_any_inventory_is_told_in_safe_bounded_lines_and_never_exit_70(tmp_path, shape, selection):
    path = write(tmp_path / "inventory.yaml", shape)
    assert_told_safely(*validate(path))
    # `validate --select` prints the names of the servers it matches: `name:*` matches them all.
    assert_told_safely(*validate(path, "--select", "name:*", "--select", f"name:{selection}"))
    selection_file = write(tmp_path / "suspects.txt", selection)
    assert_told_safely(*validate(path, "--select", f"@{selection_file}"))


@settings(max_examples=12, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    template=st.sampled_from(TEMPLATES),
    piece=st.sampled_from([*DANGEROUS, "k", "é"]),
    size=st.sampled_from([200_000, 1_000_000, 3_000_000]),
)
def test_megabytes_of_user_text_are_cut_to_one_short_line(tmp_path, template, piece, size):
    path = write(tmp_path / "inventory.yaml", template.format(piece * (size // len(piece))))
    assert_told_safely(*validate(path))


def test_a_host_that_cannot_be_encoded_is_exit_2_naming_the_key(tmp_path):
    """`https://xn--` and a 70-letter label reached yarl's IDNA codec and ended in exit 70."""
    for host in ("xn--", "a" * 70 + "é", "xn--zz.example"):
        path = write(tmp_path / "inventory.yaml", f"endpoint: https://{host}\nproject_id: {PROJECT}\nservers: [a]\n")
        for command in ("validate", "run"):
            args = ["-o", str(tmp_path / "out")] if command == "run" else []
            done = subprocess.run(
                [sys.executable, "-m", "collector", command, "-i", str(path), *args],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 2, done.stderr
            lines = done.stderr.splitlines()
            assert len(lines) == 1 and "endpoint" in lines[0] and "DNS name" in lines[0], done.stderr
            assert not (tmp_path / "out").exists()


def test_a_yaml_tag_of_escape_sequences_is_shown_escaped(tmp_path):
    path = write(tmp_path / "inventory.yaml", "projects: !<%0A%1b[31m> []\n")
    done = subprocess.run(
        [sys.executable, "-m", "collector", "validate", "-i", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "\x1b" not in done.stderr
    assert "\\n\\x1b[31m" in done.stderr


def test_server_names_from_the_inventory_reach_stdout_escaped(tmp_path):
    name = "db\x1b[31m-01\u202eevil\ue000"
    path = write(
        tmp_path / "inventory.yaml",
        yaml.safe_dump(
            {
                "endpoint": "https://clouddc.cn-east-3.myhuaweicloud.com",
                "project_id": PROJECT,
                "servers": [{"id": "s1", "name": name}],
            },
            allow_unicode=True,
        ),
    )
    code, printed = validate(path, "--select", "name:db*")
    assert code == 0
    assert "db\\x1b[31m-01\\u202eevil\\ue000" in printed
    assert_told_safely(code, printed)


@pytest.mark.parametrize("text", ["ok", "\x1b[2J", "x" * 10_000, "a\nb", "\u202e" * 600])
def test_one_line_is_escaped_and_bounded(text):
    from collector.text import one_line

    line = one_line(text)
    assert len(line) <= LINE_LIMIT and not RAW_UNSAFE.search(line) and "\n" not in line


def big_inventory(path: Path, servers: int = 100_000) -> Path:
    """An inventory that takes `validate` a few seconds: long enough to be interrupted."""
    ids = "\n".join(f"  - s{n:06d}" for n in range(servers))
    return write(
        path, f"endpoint: https://clouddc.cn-east-3.myhuaweicloud.com\nproject_id: {PROJECT}\nservers:\n{ids}\n"
    )


def loading_our_modules(pid: int) -> bool:
    """Whether the process has got past Python's own start-up into the collector's imports:
    a C extension only they load (multidict, under yarl and aiohttp) is mapped."""
    try:
        return "multidict" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.parametrize("after", [0.0, 0.05, 0.15])
def test_ctrl_c_while_modules_load_prints_nothing_and_exits_130(tmp_path, after):
    """The modules take about 0.3 s to import; Ctrl-C then printed a KeyboardInterrupt traceback.
    (Before Python runs our first line, in its own start-up, it is Python's to handle: the
    signal is sent once the process is loading our modules, then `after` seconds later.)"""
    path = big_inventory(tmp_path / "inventory.yaml")
    process = subprocess.Popen(
        [sys.executable, "-m", "collector", "validate", "-i", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not loading_our_modules(process.pid) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(after)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err == "" and out == ""


def test_output_parents_are_created_0700_under_umask_0(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    done = subprocess.run(
        [sys.executable, "-m", "collector", "demo", "--servers", "2", "-o", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.umask(0),
    )
    assert done.returncode == 0, done.stderr
    for folder in (tmp_path / "a", tmp_path / "a" / "b", out, out / ".collector"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
