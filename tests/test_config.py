"""Configuration: defaults, the example file, and bad files refused with their dotted key."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dcrond.config import Config, load_config
from dcrond.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dcrond.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_file_is_valid_and_matches_the_defaults() -> None:
    example = load_config(ROOT / "dcrond.toml.example")
    defaults = Config()
    assert dataclasses.replace(example, source="defaults") == defaults


def test_example_file_mentions_every_key() -> None:
    text = (ROOT / "dcrond.toml.example").read_text(encoding="utf-8")
    for section in dataclasses.fields(Config):
        if section.name == "source":
            continue
        assert f"[{section.name}]" in text
        cls = type(getattr(Config(), section.name))
        for key in dataclasses.fields(cls):
            assert f"{key.name} =" in text, f"{section.name}.{key.name} is not documented"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[raft]\ntick = 5\n", "raft.tick: unknown key"),
        ("[rafts]\n", "rafts: unknown section"),
        ("[raft]\ntick_ms = 'fast'\n", "raft.tick_ms: expected int, got str"),
        ("[raft]\nfsync = 1\n", "raft.fsync: expected bool, got int"),
        ("[api]\nlisten = 'nowhere'\n", "api.listen: expected host:port"),
        ("[raft\n", "not valid TOML"),
    ],
)
def test_bad_config_is_refused_with_the_dotted_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(_write(tmp_path, text))


def test_daemon_exits_78_on_an_unknown_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "[node]\nnmae = 'typo'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "dcrond", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 78
    assert "node.nmae: unknown key" in proc.stderr


def test_the_example_file_loads_and_shows_every_key_at_its_default(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "dcrond.toml.example"
    loaded = load_config(example)
    defaults = Config()
    for section in ("node", "api", "raft", "cluster", "discovery", "storage", "runner", "jobs"):
        for f in dataclasses.fields(getattr(defaults, section)):
            if section == "node":
                continue  # commented out: the defaults depend on the host
            assert f"\n{f.name} = " in example.read_text(), f"{section}.{f.name} undocumented"
            assert getattr(getattr(loaded, section), f.name) == getattr(
                getattr(defaults, section), f.name
            ), f"{section}.{f.name} differs from its default"


def test_join_takes_a_list_of_strings(tmp_path: Path) -> None:
    text = '[discovery]\njoin = ["h1", "h2:7400", "[fd00::5]:7302"]\nzeroconf = false\n'
    config = load_config(_write(tmp_path, text))
    assert config.discovery.join == ("h1", "h2:7400", "[fd00::5]:7302")
    assert config.discovery.zeroconf is False
    assert load_config(_write(tmp_path, "[discovery]\njoin = []\n")).discovery.join == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[discovery]\njoin = 'h1'\n", "discovery.join: expected a list of strings"),
        ("[discovery]\njoin = ['h1', 7302]\n", "discovery.join: expected a list of strings"),
        ("[discovery]\njoin = ['h1:port']\n", "discovery.join: expected host or host:port"),
        ("[discovery]\ninterface = 'eth0'\n", "discovery.interface: expected an IP address"),
        ("[discovery]\nzeroconf = 'yes'\n", "discovery.zeroconf: expected bool, got str"),
    ],
)
def test_bad_discovery_settings_are_refused_with_the_dotted_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(_write(tmp_path, text))


def test_node_tags_are_read_from_an_inline_table_or_a_sub_table(tmp_path: Path) -> None:
    inline = load_config(_write(tmp_path, '[node]\ntags = { zone = "eu", role = "db" }\n'))
    assert inline.node.tags == (("role", "db"), ("zone", "eu"))  # sorted, as gossip keeps them
    assert inline.node.tag_map() == {"role": "db", "zone": "eu"}
    table = load_config(_write(tmp_path, '[node.tags]\nrole = "db"\n"k8s.io/arch" = ""\n'))
    assert table.node.tags == (("k8s.io/arch", ""), ("role", "db"))
    assert Config().node.tags == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[node]\ntags = "role=db"\n', "node.tags: expected a table of strings"),
        ('[node]\ntags = ["role"]\n', "node.tags: expected a table of strings"),
        ('[node]\ntags = { "bad key" = "x" }\n', "node.tags key: 'bad key' is not allowed"),
        ('[node]\ntags = { "-x" = "x" }\n', "node.tags key: '-x' is not allowed"),
        ("[node]\ntags = { role = 5 }\n", "node.tags.role: 5 is not allowed"),
        ('[node]\ntags = { role = "a\\nb" }\n', "node.tags.role: 'a\\nb' is not allowed"),
        ("[node]\ntags = { role = { x = 'y' } }\n", "node.tags.role: {'x': 'y'} is not allowed"),
        (
            "[node]\ntags = {" + ", ".join(f"t{i} = ''" for i in range(65)) + "}\n",
            "node.tags: 65 tags is too many; at most 64",
        ),
        (
            "[node]\ntags = {" + ", ".join(f"t{i} = '{'v' * 200}'" for i in range(3)) + "}\n",
            "node.tags: the tags take 615 bytes in gossip",
        ),
    ],
)
def test_bad_node_tags_are_refused_with_the_dotted_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(_write(tmp_path, text))


def test_tags_that_just_fit_one_gossip_record_are_accepted(tmp_path: Path) -> None:
    # 64 short tags: the most a host may carry, and they still fit the 512-byte record
    text = "[node]\ntags = {" + ", ".join(f"t{i:02} = 'v'" for i in range(64)) + "}\n"
    assert len(load_config(_write(tmp_path, text)).node.tags) == 64


def test_daemon_exits_78_on_a_bad_tag(tmp_path: Path) -> None:
    path = _write(tmp_path, "[node]\ntags = { role = 5 }\n")
    proc = subprocess.run(
        [sys.executable, "-m", "dcrond", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 78
    assert "node.tags.role: 5 is not allowed" in proc.stderr
