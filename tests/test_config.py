"""The config is strict: every mistake is reported, each with its file, line and key."""

from pathlib import Path

import pytest

from edged.config import key_lines, load_config, parse_config, reference
from edged.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "edged.toml")
    return info.value.problems


def test_shipped_example_and_demo_configs_are_valid():
    for path in (REPO / "systemd" / "edged.toml", REPO / "edged" / "data" / "demo.toml"):
        config = load_config(path)
        assert config.devices, path
        assert config.devices[0].type == "replay"


def test_misspelt_key_names_line_key_and_suggestion():
    text = '[[devices]]\nname = "bed1"\ntype = "replay"\npath = "x.rr"\nsped = 4\n'
    assert problems(text) == ["edged.toml:5: devices[0].sped: unknown key (did you mean 'speed'?)"]


def test_every_problem_is_reported_at_once_with_its_line():
    text = """
[mqtt]
port = "1883"
embeded = "auto"

[[devices]]
name = "bed one"
type = "replay"

[[devices]]
name = "b"
type = "bluetooth"
"""
    found = problems(text)
    assert "edged.toml:3: mqtt.port: must be an integer, got '1883'" in found
    assert "edged.toml:4: mqtt.embeded: unknown key (did you mean 'embedded'?)" in found
    assert any(p.startswith("edged.toml:7: devices[0].name:") for p in found)
    assert "edged.toml:6: devices[0].path: required key is missing" in found
    assert any(p.startswith("edged.toml:12: devices[1].type: must be one of") for p in found)
    assert len(found) == 5


def test_defaults_and_types_are_applied():
    config = parse_config('[[devices]]\nname = "a"\ntype = "replay"\npath = "x.rr"\nspeed = 2\n')
    device = config.devices[0]
    assert device.options["speed"] == 2.0 and isinstance(device.options["speed"], float)
    assert device.model == "ibi-slpdb-causal-v1"
    assert config.mqtt["port"] == 1883 and config.mqtt["embedded"] == "auto"


def test_invalid_toml_is_one_clear_error():
    found = problems("[mqtt\nhost = 1\n")
    assert len(found) == 1 and found[0].startswith("edged.toml: not valid TOML:") and "line 1" in found[0]


def test_duplicate_device_names_are_refused():
    text = '[[devices]]\nname = "a"\ntype = "replay"\npath = "x"\n[[devices]]\nname = "a"\ntype = "replay"\npath = "y"\n'
    assert problems(text) == ["edged.toml:6: devices[1].name: device name 'a' is used twice"]


def test_key_lines_follow_tables_arrays_and_inline_tables():
    text = '[node]\nid = "x"\n[[devices]]\nname = "a"\n[[devices]]\nchannels = { ibi = "rr" }\n'
    lines = key_lines(text)
    assert lines[("node", "id")] == 2
    assert lines[("devices", 0, "name")] == 4
    assert lines[("devices", 1, "channels", "ibi")] == 6


def test_reference_documents_every_key():
    text = reference()
    for key in ("base_topic", "password_file", "quality_threshold", "chunk_seconds", "embedded_port"):
        assert f"`{key}`" in text


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    cfg = tmp_path / "conf" / "edged.toml"
    cfg.parent.mkdir()
    cfg.write_text('[[devices]]\nname = "a"\ntype = "replay"\npath = "nights/one.rr"\n')
    config = load_config(cfg)
    assert config.path == cfg.resolve()
    assert config.relative(config.devices[0].options["path"]) == cfg.resolve().parent / "nights" / "one.rr"
