"""`collector grep`: the archives a sweep wrote, searched in place, nested members included.

The archives are the simulator's (`collector.simulator.archive`): a rotated ``.gz`` log and a
nested ``.tar.gz`` of BMC event logs in each, with ``board serial {id}`` planted in the nested
one and fault lines on the servers `faults(id)` names. Folders are written as a run writes
them (`archive_name`), or by a sweep of the simulator.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import tarfile
from pathlib import Path

import anyio
import pytest
from _fleet import sweep
from _moto import raw_client

from collector.cli.main import main
from collector.destinations.base import archive_name
from collector.simulator import SimConfig, Simulator
from collector.simulator.archive import build_archive, faults

pytestmark = pytest.mark.timeout(60)

PROJECT = "p1"
IDS = [f"2102313YJK10N{n:07d}" for n in range(12)]
PLANTED = re.compile(r"^(\w+)/(\w+):\1?(\w+)/bmc/bmc-events\.tar\.gz!sel/sel\.log:1:SEL 0001 .* board serial (\w+) ")


def write_fleet(root: Path, ids=IDS, size: int = 32768, project: str = PROJECT, **kwargs) -> Path:
    for server_id in ids:
        path = root / archive_name(project, server_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(build_archive(server_id, size, 5, **kwargs))
    return root


def grep(capsys, *args: str) -> tuple[int, list[str], list[str]]:
    """`collector grep ARGS` in this process (-j 1 unless -j is given: no worker to start)."""
    code = main(["grep", *args] if "-j" in args else ["grep", *args, "-j", "1"])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def servers_of(lines: list[str]) -> set[str]:
    return {line.split(":", 1)[0].split("/", 1)[1] for line in lines}


def member_lines(data: bytes, member_suffix: str) -> list[bytes]:
    """The lines of the members ending in `member_suffix`, read with tarfile: the oracle."""
    lines: list[bytes] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(member_suffix):
                text = tar.extractfile(member).read()
                lines += text.split(b"\n")[: -1 if text.endswith(b"\n") else None]
    return lines


# -- a sweep, then a search ------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_sweep_of_300_servers_is_searched_nested_members_and_all(tmp_path, fast_settings, capsys):
    config = SimConfig(servers=300, seed=3, export_seconds=(0.01, 0.02), archive_bytes=(16384, 20000))
    patient = dataclasses.replace(fast_settings, read_timeout=30, export_timeout=60)  # a loaded machine
    async with Simulator(config) as sim:
        outcome = await sweep(sim, tmp_path, patient)
        assert outcome.results and all(r.state == "collected" for r in outcome.results)
        ids, project = set(sim.server_ids), sim.project_id
    out = str(tmp_path / "out")
    capsys.readouterr()

    code, lines, err = grep(capsys, "board serial", out, "-j", "2")
    assert code == 0 and err == []
    assert len(lines) == 300
    for line in lines:
        who, member, number, text = line.split(":", 3)
        server = who.removeprefix(f"{project}/")
        assert member == f"{server}/bmc/bmc-events.tar.gz!sel/sel.log" and number == "1"
        assert f"board serial {server} " in text  # attributed to the server it came from
    assert servers_of(lines) == ids

    code, lines, _ = grep(capsys, "board serial", out, "--json")
    records = [json.loads(line) for line in lines]
    assert {r["server"] for r in records} == ids
    for record in records:
        assert set(record) == {"project", "server", "archive", "member", "line", "text"}
        assert record["project"] == project and record["line"] == 1
        assert record["archive"] == str(tmp_path / "out" / archive_name(project, record["server"]))
        assert f"board serial {record['server']} " in record["text"]

    # The faults are the simulator's, decided by the id: found on those servers, and only there.
    code, lines, _ = grep(capsys, "Uncorrectable ECC", out, "-l")
    assert set(lines) == {f"{project}/{s}" for s in ids if "memory" in faults(s)} and code == 0
    code, lines, _ = grep(capsys, "I/O error", out, "-l", "--member", "*.gz")
    assert set(lines) == {f"{project}/{s}" for s in ids if "disk" in faults(s)}


# -- every flag ---------------------------------------------------------------------------------


def test_fixed_strings_case_and_words(tmp_path, capsys):
    root = str(write_fleet(tmp_path))
    code, fixed, _ = grep(capsys, "-F", "| board serial", root, "-j", "1")
    assert code == 0 and servers_of(fixed) == set(IDS) and len(fixed) == len(IDS)
    _, regex, _ = grep(capsys, "| board serial", root, "-j", "1")  # '|' alternation: every line
    assert len(regex) > 10 * len(fixed)
    _, folded, _ = grep(capsys, "-i", "BOARD SERIAL", root)
    assert folded == [] or sorted(folded) == sorted(fixed)
    assert sorted(grep(capsys, "-i", "-F", "BOARD serial", root)[1]) == sorted(fixed)
    assert grep(capsys, "-w", "boar", root)[0] == 1
    assert sorted(grep(capsys, "-w", "board", root, "--member", "*sel/sel.log")[1]) == sorted(fixed)


def test_count_and_invert_match_the_lines_tarfile_reads(tmp_path, capsys):
    root = write_fleet(tmp_path, IDS[:3])
    expected = {}
    for server_id in IDS[:3]:
        data = (root / archive_name(PROJECT, server_id)).read_bytes()
        lines = member_lines(data, "/var/log/messages")
        expected[server_id] = (sum(b"sshd" in line for line in lines), sum(b"sshd" not in line for line in lines))
    member = ["--member", "*/var/log/messages"]
    code, lines, _ = grep(capsys, "sshd", str(root), "-c", *member)
    assert code == 0 and lines == [f"{PROJECT}/{s}:{expected[s][0]}" for s in sorted(IDS[:3])]
    _, lines, _ = grep(capsys, "sshd", str(root), "-c", "-v", *member)
    assert lines == [f"{PROJECT}/{s}:{expected[s][1]}" for s in sorted(IDS[:3])]
    _, lines, _ = grep(capsys, "sshd", str(root), "-v", *member, "-j", "1")
    assert len(lines) == sum(v for _, v in expected.values())
    assert not any("sshd" in line.split(":", 3)[3] for line in lines)
    _, lines, _ = grep(capsys, "nothing-like-this", str(root), "-c")
    assert lines == [f"{PROJECT}/{s}:0" for s in sorted(IDS[:3])]  # as grep -c: zero is said


def test_list_max_count_member_and_json(tmp_path, capsys):
    root = str(write_fleet(tmp_path))
    code, lines, _ = grep(capsys, "sshd", root, "-l")
    assert code == 0 and sorted(lines) == sorted(f"{PROJECT}/{s}" for s in IDS)
    code, lines, _ = grep(capsys, "sshd", root, "-m", "2", "-j", "1")
    assert len(lines) == 2 * len(IDS)
    assert grep(capsys, "sshd", root, "-m", "0") == (1, [], [])
    _, lines, _ = grep(capsys, ".", root, "--member", "*messages.1.gz")
    assert lines and all(line.split(":")[1].endswith("/var/log/messages.1.gz") for line in lines)
    # Options before OUT, as grep takes them: `grep -c PATTERN --member GLOB OUT`.
    assert grep(capsys, ".", "--member", "*messages.1.gz", root)[1] == lines
    _, lines, _ = grep(capsys, "degrees", root, "--member", "*bmc-events.tar.gz!*", "--json")
    assert {json.loads(line)["member"].split("!")[1] for line in lines} == {"sel/sensors.txt"}
    _, lines, _ = grep(capsys, "board", root, "-l", "--json")
    assert sorted(json.loads(line)["server"] for line in lines) == sorted(IDS)
    _, lines, _ = grep(capsys, "board", root, "-c", "--json")
    assert json.loads(lines[0]) == {"project": PROJECT, "server": IDS[0], "count": 1}


def test_select_by_id_project_and_the_reports_names(tmp_path, capsys):
    root = write_fleet(tmp_path, IDS[:4])
    write_fleet(tmp_path, IDS[4:6], project="p2")
    servers = [{"project_id": PROJECT, "server_id": s, "name": f"node-{n}"} for n, s in enumerate(IDS[:4])]
    (root / "report.json").write_text(json.dumps({"servers": servers}))
    args = ["board serial", str(root), "-l"]
    assert grep(capsys, *args, "--select", f"id:{IDS[1]}")[1] == [f"{PROJECT}/{IDS[1]}"]
    assert sorted(grep(capsys, *args, "--select", "project:p2")[1]) == sorted(f"p2/{s}" for s in IDS[4:6])
    assert grep(capsys, *args, "--select", "name:node-[23]", "--select", "!name:node-3")[1] == [f"{PROJECT}/{IDS[2]}"]
    code, out, err = grep(capsys, *args, "--select", "name:nobody")
    assert code == 2 and out == [] and len(err) == 1 and "matches" in err[0]


def test_several_outputs_are_searched_together(tmp_path, capsys):
    first = write_fleet(tmp_path / "a", IDS[:2])
    second = write_fleet(tmp_path / "b", IDS[2:4])
    code, lines, _ = grep(capsys, "board serial", str(first), str(second), "-l")
    assert code == 0 and sorted(lines) == sorted(f"{PROJECT}/{s}" for s in IDS[:4])


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["("], "not a valid regular expression"),
        (["x", "-m", "many"], "expected a whole number"),
        (["x", "-j", "0"], "at least 1"),
        (["x", "--membr", "*"], "unrecognized arguments"),
        (["x", "--member", "[oops"], "never closed"),
        (["x", "--select", "nmae:x"], "did you mean name:?"),
        ([], "the following arguments are required"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(tmp_path, capsys, args, words):
    write_fleet(tmp_path, IDS[:1])
    with pytest.raises(SystemExit) as stopped:
        raise SystemExit(main(["grep", *args[:1], str(tmp_path), *args[1:]] if args else ["grep"]))
    out, err = capsys.readouterr()
    assert stopped.value.code == 2 and out == ""
    assert len(err.splitlines()) == 1 and words in err, err


def test_exit_codes_nothing_to_search_and_a_damaged_archive(tmp_path, capsys):
    assert grep(capsys, "x", str(tmp_path / "missing"))[0] == 2
    assert grep(capsys, "x", str(tmp_path))[0] == 2  # a folder without archives
    root = write_fleet(tmp_path, IDS[:2])
    damaged = root / archive_name(PROJECT, IDS[0])
    data = damaged.read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    code, lines, err = grep(capsys, "board serial", str(root))
    assert code == 0 and servers_of(lines) == {IDS[1]}  # the search went on
    assert len(err) == 1 and str(damaged) in err[0] and "warning" in err[0]
    assert grep(capsys, "nothing-like-this", str(root))[0] == 1
    (root / archive_name(PROJECT, IDS[1])).write_bytes(b"\x1f\x8b junk")
    damaged.write_bytes(b"")
    code, _, err = grep(capsys, "x", str(root))
    assert code == 2 and "no archive could be searched" in err[-1]


# -- object storage --------------------------------------------------------------------------


def test_an_s3_output_is_searched_as_a_folder_is(moto_server, capsys):
    bucket = "collector-grep-test"

    async def upload() -> None:
        async with raw_client(moto_server.url) as client:
            await client.create_bucket(Bucket=bucket)
            for server_id in IDS[:4]:
                key = f"nightly/{archive_name(PROJECT, server_id)}"
                await client.put_object(Bucket=bucket, Key=key, Body=build_archive(server_id, 40000, 5))
            await client.put_object(Bucket=bucket, Key="nightly/p1/notes.txt", Body=b"board serial x")

    anyio.run(upload)
    url = f"s3://{bucket}/nightly"
    for jobs in ("1", "2"):
        code, lines, err = grep(capsys, "board serial", url, "--s3-endpoint", moto_server.url, "-j", jobs, "--json")
        assert code == 0 and err == []
        records = [json.loads(line) for line in lines]
        assert sorted(r["server"] for r in records) == IDS[:4]
        assert {r["archive"] for r in records} == {f"s3://{bucket}/nightly/{archive_name(PROJECT, s)}" for s in IDS[:4]}
    code, lines, _ = grep(capsys, "sshd", url, "--s3-endpoint", moto_server.url, "-m", "1", "-j", "1")
    assert code == 0 and len(lines) == 4
