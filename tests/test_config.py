"""Config layering: defaults < YAML file < flags."""

from __future__ import annotations

import re

import pytest
import yaml

from segnet.core.errors import SegnetError
from segnet.core.runfiles import CONFIG_FILE
from segnet.plan.config import TrainConfig, load_config, save_config


def test_flags_win_over_the_file_which_wins_over_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"epochs": 7, "lr": 0.01, "model": "segnet"}))
    config = load_config(tmp_path / "c.yaml", {"epochs": 3, "lr": None})
    assert (config.epochs, config.lr, config.model, config.batch_size) == (3, 0.01, "segnet", TrainConfig().batch_size)


def test_round_trip_through_yaml(tmp_path):
    config = load_config(None, {"data": "d", "out": "o", "classes": ["bg", "cell"]})
    save_config(config, tmp_path / CONFIG_FILE)
    assert load_config(tmp_path / CONFIG_FILE) == config


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"optimizer": "rmsprop"}, "optimizer = 'rmsprop' is refused: input should be 'adamw' or 'sgd'"),
        ({"bogus": 1}, "unknown config keys"),
        ({"classes": ["a"]}, "classes = ['a'] is refused: list should have at least 2 items"),
        ({"classes": ["a", "a"]}, "at least two distinct names"),
    ],
)
def test_bad_values_are_clear_errors(tmp_path, values, message):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(SegnetError, match=re.escape(message)):
        load_config(tmp_path / "c.yaml")


def test_default_learning_rate_depends_on_the_optimiser():
    assert load_config(None, {"optimizer": "sgd"}).learning_rate == 0.05
    assert load_config(None, {"optimizer": "adamw"}).learning_rate == 1e-3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"epochs: 2\nbatch_size: 8\nepochs: 60\n",
            "not a valid YAML config at line 3, column 1: the key 'epochs' is given twice",
        ),
        (
            b"classes: [a, b\n",
            "not a valid YAML config at line 2, column 1: expected ',' or ']', but got '<stream end>'",
        ),
        (
            b"epochs: !!python/object/apply:os.system [true]\n",
            "not a valid YAML config at line 1, column 9: could not determine a constructor",
        ),
        (b"\xff\xfe\x00epochs: 2", "not UTF-8 text (byte 0): a damaged config"),
        (b"1: 2\nbogus: 3\n", "unknown config keys [1, 'bogus']"),
        (b"0\n", "a config must be a mapping of option: value"),
        (
            b"!!set option:\n",
            "not a valid YAML config at line 1, column 1: expected a mapping node, but found scalar",
        ),  # found by fuzzing
    ],
)
def test_a_broken_yaml_file_is_one_line_naming_it(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(SegnetError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("values", "expected"),
    [  # each was taken silently or failed only once training had started (issue 15 item 2)
        ({"classes": "abc"}, "classes = 'abc' is refused: input should be a valid list"),
        ({"batch_size": True}, "batch_size = True is refused: input should be a valid integer"),
        ({"amp": "no"}, "amp = 'no' is refused: input should be a valid boolean"),
        ({"epochs": 1.5}, "epochs = 1.5 is refused: input should be a valid integer"),
        ({"lr": -1}, "lr = -1 is refused: input should be greater than 0"),
        ({"lr": float("nan")}, "lr = nan is refused: input should be a finite number"),
        (
            {"mask_palette": {"erythrocyte": [255, 0]}},
            "mask_palette = {'erythrocyte': [255, 0]} is refused: list should have at least 3 items, not 2",
        ),
        ({"folds": 1}, "folds = 1 is refused: input should be greater than or equal to 2"),
        ({"downsample": 1000}, "downsample = 1000 is refused: input should be less than or equal to 16"),
    ],
)
def test_every_value_is_checked_against_its_type_and_range(tmp_path, values, expected):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(SegnetError) as error:
        load_config(path)
    assert str(error.value) == f"{path}: {expected}"
    # A flag goes through the same check and is named as the flag.
    ((key, value),) = values.items()
    with pytest.raises(SegnetError) as error:
        load_config(None, {key: value})
    assert str(error.value) == f"--{key.replace('_', '-')}: {expected}"


def test_folds_go_in_the_yaml_file_as_the_readme_says(tmp_path):
    (tmp_path / "c.yaml").write_text("folds: 5\n")
    assert load_config(tmp_path / "c.yaml").folds == 5


def test_every_option_has_a_train_flag_or_set_and_the_help_shows_the_config_default():
    from segnet.cli import build_parser
    from segnet.plan.config import FIELD_NAMES, config_options, yaml_only_options

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = {action.dest: action for action in train._actions}
    options = config_options()
    assert {option.name for option in options} | set(yaml_only_options()) == FIELD_NAMES  # flags or YAML / --set
    assert {option.name for option in options} & set(yaml_only_options()) == set()
    defaults = TrainConfig()
    for option in options:
        assert option.default == getattr(defaults, option.name)
        assert flags[option.name].default is None  # not given: the YAML file, then the config default, apply
        if option.default not in (None, "", True, False):
            shown = " ".join(map(str, option.default)) if option.many else str(option.default)
            assert f"(default: {shown})" in flags[option.name].help, option.name
    # Parsing no flags gives exactly the config's defaults.
    args = parser.parse_args(["train"])
    assert load_config(None, {option.name: getattr(args, option.name) for option in options}) == defaults
