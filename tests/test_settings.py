"""Settings are declared once: the flags, the inventory's `collector:` section, the precedence
and the README's table all come from the same declarations, so they cannot disagree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from collector.cli.main import build_parser
from collector.config.inventory import load_inventory
from collector.config.settings import (
    BY_KEY,
    OPTIONS,
    SETTINGS,
    Deadline,
    FailureBudget,
    Kind,
    Settings,
    given,
    markdown_table,
    parse_size,
    resolve,
)

README = Path(__file__).resolve().parent.parent / "README.md"

HEAD = """\
endpoint: https://api.example.com
project_id: p1
auth: {token_env: CLOUDDC_TOKEN}
servers: [S1]
"""
ENV = {"CLOUDDC_TOKEN": "t"}

# A value other than the default for each kind, as a flag's text and as YAML.
SAMPLES = {
    Kind.COUNT: ("7", "7", 7),
    Kind.POSITIVE: ("2.5", "2.5", 2.5),
    Kind.NON_NEGATIVE: ("0", "0", 0.0),
    Kind.SIZE: ("1G", "1G", 1024**3),
    Kind.BUDGET: ("5%", '"5%"', FailureBudget(percent=5.0)),
    Kind.TEXT: ("https://obs.example", "https://obs.example", "https://obs.example"),
    Kind.DEADLINE: ("15m", "15m", Deadline(seconds=900.0)),
}


def run_args(*flags: str):
    return build_parser().parse_args(["run", "-i", "inv.yaml", "-o", "out", *flags])


def inventory_with(tmp_path: Path, section: str):
    path = tmp_path / "inventory.yaml"
    path.write_text(HEAD + "collector:\n" + section)
    return load_inventory(path, ENV)


def test_readme_flag_table_is_the_rendered_declarations():
    text = README.read_text(encoding="utf-8")
    start = text.index("| flag | default |")
    end = text.index("\n\n", start)
    assert text[start : end + 1] == markdown_table()


def help_of(command: str, capsys) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    return capsys.readouterr().out


def test_every_option_is_a_flag_of_run_and_the_demo_has_all_but_the_run_only_ones(capsys):
    run_help, demo_help = help_of("run", capsys), help_of("demo", capsys)
    for option in OPTIONS:
        assert f" {option.flag}" in run_help, option.name
        assert (f" {option.flag}" in demo_help) is not option.run_only, option.name


def test_every_setting_reads_the_same_from_a_flag_and_from_the_inventory(tmp_path):
    for option in BY_KEY.values():
        if option.kind is Kind.SWITCH:
            flags, yaml_value, value = [option.flag], str(not option.default).lower(), not option.default
        elif option.kind is Kind.CHOICE:
            other = next(c for c in option.choices if c != option.default)
            flags, yaml_value, value = [option.flag, other], other, other
        else:
            text, yaml_value, value = SAMPLES[option.kind]
            flags = [option.flag, text]
        from_flag = resolve(given(run_args(*flags)))
        from_yaml = resolve(inventory_with(tmp_path, f"  {option.name}: {yaml_value}\n").settings)
        assert getattr(from_flag, option.name) == getattr(from_yaml, option.name) == value, option.name
        assert from_flag == from_yaml


def test_flags_win_over_the_inventory_which_wins_over_the_defaults(tmp_path):
    inventory = inventory_with(tmp_path, "  rate: 5\n  downloads: 3\n  progress: false\n")
    settings = resolve(inventory.settings, given(run_args("--rate", "7", "--outage-timeout", "30")))
    assert (settings.rate, settings.downloads, settings.outage_timeout, settings.progress) == (7.0, 3, 30.0, False)
    assert settings.concurrency == Settings().concurrency
    assert resolve(inventory.settings, given(run_args())).rate == 5.0


def test_a_flag_not_given_does_not_override_the_inventory(tmp_path):
    inventory = inventory_with(tmp_path, "  progress: false\n  verify: true\n  log_format: json\n")
    settings = resolve(inventory.settings, given(run_args("-v")))
    assert (settings.progress, settings.verify, settings.log_format) == (False, True, "json")


def test_user_settings_and_internal_fields_are_told_apart():
    names = {option.name for option in SETTINGS}
    assert {"connect_timeout", "outage_timeout", "log_format", "progress", "max_archive_bytes"} <= names
    assert not {"policy", "poll_max"} & names
    assert Settings().outage_timeout == 600.0


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("65536", 65536),
        ("256K", 256 * 1024),
        ("512m", 512 * 1024**2),
        ("8G", 8 * 1024**3),
        ("8GiB", 8 * 1024**3),
        ("8gb", 8 * 1024**3),
        ("1.5G", 3 * 512 * 1024**2),
        (" 2T ", 2 * 1024**4),
    ],
)
def test_sizes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "lots", "0", "0K", "-1G", "inf", "nan", "1e9", "8 X", "G"])
def test_what_is_not_a_size(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_resolve_refuses_what_is_not_a_setting():
    with pytest.raises(ValueError, match="fresh"):
        resolve({"fresh": True})


def test_the_example_inventory_shows_every_setting():
    text = (Path(__file__).resolve().parent.parent / "configs" / "example-inventory.yaml").read_text()
    section = text[text.index("\ncollector:") :]
    missing = [key for key in BY_KEY if not re.search(rf"^\s+(# )?{key}:", section, re.MULTILINE)]
    assert not missing
