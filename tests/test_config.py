import pytest

from deepnet.config import ConfigError, load_config, parse_config


def test_defaults_are_written_out():
    config = parse_config({})
    dumped = config.model_dump()
    assert dumped["train"]["optimizer"] == "adamw"
    assert set(dumped) == {"data", "model", "train"}


def test_unknown_key_suggests_the_nearest():
    with pytest.raises(ConfigError, match=r"unknown key 'train.learning_rat'.*did you mean train.lr|unknown key 'train.epoch'"):
        parse_config({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch'; did you mean train.epochs\?"):
        parse_config({"train": {"epoch": 3}})


def test_unknown_section():
    with pytest.raises(ConfigError, match=r"unknown key 'trian'; did you mean train\?"):
        parse_config({"trian": {}})


def test_invalid_value_names_key_and_value():
    with pytest.raises(ConfigError, match=r"invalid value for 'train.optimizer'.*received 'adamm'"):
        parse_config({"train": {"optimizer": "adamm"}})
    with pytest.raises(ConfigError, match=r"invalid value for 'train.lr'"):
        parse_config({"train": {"lr": -1}})


def test_overrides_are_parsed_and_validated(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\n")
    config = load_config(path, ["train.lr=0.01", "train.deterministic=true", "model.args.width=64"])
    assert config.train.lr == 0.01 and config.train.deterministic is True
    assert config.model.args == {"width": 64}
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(path, ["train.lr"])
    with pytest.raises(ConfigError, match="unknown key 'train.learning_rate'"):
        load_config(path, ["train.learning_rate=0.1"])


def test_malformed_yaml_reports_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: [3\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_warmup_must_fit_in_epochs():
    with pytest.raises(ConfigError, match="warmup_epochs"):
        parse_config({"train": {"epochs": 2, "warmup_epochs": 2}})
