"""[tls]: off for the single-host default, on as soon as a listener faces the network,
and plain text on the network only when the operator says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcrond.config import Config, default_tls_dir, load_config
from dcrond.errors import ConfigError


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "dcrond.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def test_the_single_host_default_is_plain_text() -> None:
    assert not Config().tls_enabled
    assert not load_config(Path(__file__).parents[2] / "dcrond.toml.example").tls_enabled


@pytest.mark.parametrize(
    "listen",
    [
        '[api]\nlisten = "0.0.0.0:7300"\n',
        '[raft]\nlisten = "198.18.0.1:7301"\n',
        '[api]\nlisten = "[::]:7300"\n',
        '[api]\nlisten = "db1.example.net:7300"\n',
        '[cluster]\ngossip_listen = "198.18.0.1:7302"\nsecret = "0123456789abcdef"\n',
    ],
)
def test_auto_turns_tls_on_when_any_listener_is_not_loopback(tmp_path: Path, listen: str) -> None:
    assert _load(tmp_path, listen).tls_enabled


def test_loopback_names_and_addresses_stay_plain(tmp_path: Path) -> None:
    config = _load(tmp_path, '[api]\nlisten = "localhost:7300"\n[raft]\nlisten = "[::1]:7301"\n')
    assert not config.tls_enabled


def test_mode_on_forces_tls_even_on_loopback(tmp_path: Path) -> None:
    assert _load(tmp_path, '[tls]\nmode = "on"\n').tls_enabled


def test_plain_text_on_the_network_is_refused_unless_insecure(tmp_path: Path) -> None:
    text = '[raft]\nlisten = "0.0.0.0:7301"\n[tls]\nmode = "off"\n'
    with pytest.raises(ConfigError, match=r"raft\.listen: 0\.0\.0\.0:7301 is reachable.*insecure"):
        _load(tmp_path, text)
    config = _load(tmp_path, text + "insecure = true\n")
    assert not config.tls_enabled


def test_an_unknown_mode_is_refused_with_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tls\.mode: expected 'auto', 'on' or 'off'"):
        _load(tmp_path, '[tls]\nmode = "yes"\n')


def test_empty_paths_mean_the_default_folder_and_given_ones_are_kept(tmp_path: Path) -> None:
    folder = default_tls_dir()
    assert Config().tls_files == (folder / "ca.crt", folder / "node.crt", folder / "node.key")
    config = _load(tmp_path, '[tls]\nca = "/x/ca.pem"\ncert = "/x/h1.pem"\nkey = "/x/h1.key"\n')
    assert config.tls_files == (Path("/x/ca.pem"), Path("/x/h1.pem"), Path("/x/h1.key"))


def test_gossip_on_the_network_needs_a_secret_unless_insecure(tmp_path: Path) -> None:
    text = '[cluster]\ngossip_listen = "0.0.0.0:7302"\n'
    with pytest.raises(ConfigError, match=r"cluster\.secret: gossip listens on 0\.0\.0\.0:7302"):
        _load(tmp_path, text)
    assert _load(tmp_path, text + 'secret = "0123456789abcdef"\n').tls_enabled
    assert _load(tmp_path, text + "[tls]\ninsecure = true\n").tls_enabled  # TLS stays on
