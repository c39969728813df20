"""llm.config: one reader for every config file, type checks from annotations, one-line errors naming the key."""

from dataclasses import dataclass, field

import pytest

from llm.config import coerce, from_mapping, read_config_file, require
from llm.errors import ConfigError
from llm.finetune import FinetuneConfig
from llm.train import TrainConfig


@dataclass
class Inner:
    rank: int = 0
    alpha: float = 16.0


@dataclass
class Outer:
    name: str
    sizes: list[int] = field(default_factory=list)
    limit: int | None = None
    flag: bool = False
    extra: dict = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        require(self, ["limit"], lambda v: v is None or v > 0, "must be > 0 or null")


def test_numbers_written_as_yaml_strings_are_numbers(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 1e-4\nmin_lr: 1.0e-5\nmax_steps: 1e3\nwarmup_steps: 10\n")
    values = read_config_file(path)
    assert values["lr"] == "1e-4"  # what PyYAML (YAML 1.1) makes of it
    config = from_mapping(TrainConfig, values, "train")
    assert (config.lr, config.min_lr, config.max_steps) == (1e-4, 1e-5, 1000)
    assert isinstance(config.lr, float) and isinstance(config.max_steps, int)


@pytest.mark.parametrize("values, message", [
    ({"epochs": True}, "^train.epochs: expected an integer, got True"),
    ({"epochs": 2.5}, "^train.epochs: expected an integer, got 2.5"),
    ({"lr": "fast"}, "^train.lr: expected a number, got 'fast'"),
    ({"lr": float("nan")}, "^train.lr: expected a number, got nan"),
    ({"lr": 0}, "^train.lr: must be > 0, got 0.0"),
    ({"device": 3}, "^train.device: expected a string, got 3"),
    ({"device": "tpu"}, "^train.device: must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    ({"epoch": 3}, "^train.epoch: unknown option"),
])
def test_finetune_config_names_section_key_and_value(values, message):
    with pytest.raises(ConfigError, match=message):
        from_mapping(FinetuneConfig, values, "train")


def test_nested_sections_lists_optionals_and_required_fields():
    config = from_mapping(Outer, {"name": "x", "sizes": [1, "2"], "limit": None, "inner": {"alpha": "8"}})
    assert config == Outer("x", [1, 2], None, False, {}, Inner(0, 8.0))
    with pytest.raises(ConfigError, match=r"^sizes\[1\]: expected an integer, got 'two'"):
        from_mapping(Outer, {"name": "x", "sizes": [1, "two"]})
    with pytest.raises(ConfigError, match="^inner.rank: expected an integer, got 'high'"):
        from_mapping(Outer, {"name": "x", "inner": {"rank": "high"}})
    with pytest.raises(ConfigError, match="^name: missing"):
        from_mapping(Outer, {})
    with pytest.raises(ConfigError, match="^limit: must be > 0 or null, got -1"):
        from_mapping(Outer, {"name": "x", "limit": -1})
    with pytest.raises(ConfigError, match="^flag: expected true or false, got 'yes'"):
        from_mapping(Outer, {"name": "x", "flag": "yes"})
    with pytest.raises(ConfigError, match="^inner: expected a mapping of options, got 3"):
        from_mapping(Outer, {"name": "x", "inner": 3})


def test_an_annotation_the_reader_does_not_know_is_a_bug_not_a_user_error():
    with pytest.raises(TypeError, match="cannot check"):
        coerce(1, tuple[int, int], "pair")


def test_require_turns_a_wrong_type_into_a_config_error():
    with pytest.raises(ConfigError, match="^lr: must be > 0, got 'x'"):
        TrainConfig(lr="x")


def test_file_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        read_config_file(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("train:\n  lr: [1\n  max_steps: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: not valid YAML") as error:
        read_config_file(tmp_path / "bad.yaml")
    assert "\n" not in str(error.value)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping of options, got list"):
        read_config_file(tmp_path / "list.yaml")
    (tmp_path / "latin1.yaml").write_bytes("lr: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin1.yaml: not UTF-8"):
        read_config_file(tmp_path / "latin1.yaml")
