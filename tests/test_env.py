from __future__ import annotations

from pathlib import Path

import pytest

from runstore.env import MASK, PluginEnvironment, is_secret_name, mask_secrets


def test_get_with_default_as_in_the_seed() -> None:
    env = PluginEnvironment({"DEBUG": "true"})
    assert env.get("API_KEY", "") == ""
    assert env.get("DEBUG", "false") == "true"


def test_typed_getters() -> None:
    env = PluginEnvironment({"N": "3", "F": "0.5", "B": "yes", "L": "a, b,,c", "BAD": "x"})
    assert env.get_int("N") == 3
    assert env.get_float("F") == 0.5
    assert env.get_bool("B") is True
    assert env.get_bool("MISSING") is False
    assert env.get_list("L") == ["a", "b", "c"]
    assert env.get_str("N") == "3"
    assert env.get_int("MISSING", 7) == 7
    with pytest.raises(ValueError, match="BAD='x' is not an integer"):
        env.get_int("BAD")
    with pytest.raises(ValueError, match="not a boolean"):
        env.get_bool("BAD")


def test_from_environ_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLUGIN_BATCH", "16")
    monkeypatch.setenv("OTHER", "x")
    env = PluginEnvironment.from_environ("PLUGIN_")
    assert env["BATCH"] == "16"
    assert "OTHER" not in env


def test_from_file_dotenv_json_toml(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("# comment\nexport A=1\nB='two'\n\n")
    assert PluginEnvironment.from_file(dotenv).to_dict() == {"A": "1", "B": "two"}
    (tmp_path / "s.json").write_text('{"A": 1}')
    assert PluginEnvironment.from_file(tmp_path / "s.json")["A"] == 1
    (tmp_path / "s.toml").write_text('A = "x"\n')
    assert PluginEnvironment.from_file(tmp_path / "s.toml")["A"] == "x"
    (tmp_path / "bad.env").write_text("A=1\nnot a setting\n")
    with pytest.raises(ValueError, match="line 2: expected KEY=VALUE"):
        PluginEnvironment.from_file(tmp_path / "bad.env")


def test_merge_later_wins_and_mapping_protocol() -> None:
    env = PluginEnvironment.merge({"A": "1", "B": "1"}, PluginEnvironment({"B": "2"}))
    assert dict(env) == {"A": "1", "B": "2"}
    assert len(env) == 2 and "A" in env and env["B"] == "2"


def test_secrets_are_masked_in_repr_and_manifests() -> None:
    assert is_secret_name("API_KEY") and is_secret_name("db_password") and is_secret_name("TOKEN")
    assert not is_secret_name("DEBUG")
    assert mask_secrets({"API_KEY": "s3cr3t", "DEBUG": "1"}) == {"API_KEY": MASK, "DEBUG": "1"}
    assert "s3cr3t" not in repr(PluginEnvironment({"API_KEY": "s3cr3t"}))
