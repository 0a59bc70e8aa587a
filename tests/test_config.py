"""Config layering: defaults < YAML file < flags."""

from __future__ import annotations

import pytest
import yaml

from segnet.config import TrainConfig, load_config, save_config
from segnet.errors import SegnetError


def test_flags_win_over_the_file_which_wins_over_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"epochs": 7, "lr": 0.01, "model": "segnet"}))
    config = load_config(tmp_path / "c.yaml", {"epochs": 3, "lr": None})
    assert (config.epochs, config.lr, config.model, config.batch_size) == (3, 0.01, "segnet", TrainConfig().batch_size)


def test_round_trip_through_yaml(tmp_path):
    config = load_config(None, {"data": "d", "out": "o", "classes": ["bg", "cell"]})
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


@pytest.mark.parametrize(
    ("values", "message"),
    [({"optimizer": "rmsprop"}, "optimizer must be one of"), ({"bogus": 1}, "unknown config keys"), ({"classes": ["a"]}, "at least two")],
)
def test_bad_values_are_clear_errors(tmp_path, values, message):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(SegnetError, match=message):
        load_config(tmp_path / "c.yaml")


def test_default_learning_rate_depends_on_the_optimiser():
    assert load_config(None, {"optimizer": "sgd"}).learning_rate == 0.05
    assert load_config(None, {"optimizer": "adamw"}).learning_rate == 1e-3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"epochs: 2\nbatch_size: 8\nepochs: 60\n", "not a valid YAML config at line 3, column 1: the key 'epochs' is given twice"),
        (b"classes: [a, b\n", "not a valid YAML config at line 2, column 1: expected ',' or ']', but got '<stream end>'"),
        (b"epochs: !!python/object/apply:os.system [true]\n", "not a valid YAML config at line 1, column 9: could not determine a constructor"),
        (b"\xff\xfe\x00epochs: 2", "cannot read config ('utf-8' codec can't decode byte 0xff"),
        (b"1: 2\nbogus: 3\n", "unknown config keys [1, 'bogus']"),
        (b"0\n", "a config must be a mapping of option: value"),
        (b"!!set option:\n", "not a valid YAML config at line 1, column 1: expected a mapping node, but found scalar"),  # found by fuzzing
    ],
)
def test_a_broken_yaml_file_is_one_line_naming_it(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(SegnetError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value) and "\n" not in str(error.value)
