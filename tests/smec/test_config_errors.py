"""smec.config_errors: jsonargparse's reports as one line naming the key and where it was set."""

from __future__ import annotations

import pytest

from smec.config_errors import describe_parse_error, read_config_files
from smec.errors import ConfigError

NESTED = """Parser key "model":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'smec.systems.base.CompressionSystem'>, <class 'NoneType'>]
  Errors:
    - Problem with given class_path 'smec.systems.mrl.MRLDecoderModule':
        Parser key "dims":
          Does not validate against any of the Union subtypes
          Subtypes: [list[int], <class 'NoneType'>]
          Errors:
            - Expected a <class 'list'>
            - Expected a <class 'NoneType'>
          Given value type: <class 'str'>
          Given value: abc
    - Expected a <class 'NoneType'>
  Given value type: <class 'dict'>
  Given value: {'class_path': 'smec.systems.mrl.MRLDecoderModule'}"""

CALLBACK = """Parser key "trainer.callbacks":
  Does not validate against any of the Union subtypes
  Subtypes: [list[lightning.pytorch.callbacks.callback.Callback], <class 'NoneType'>]
  Errors:
    - Problem with given class_path 'lightning.pytorch.callbacks.ModelCheckpoint':
        Option 'every_n_epoch' is not accepted
    - Not a valid subclass of Callback
      Subclass types expect one of:
      - a class path (str)
    - Expected a <class 'NoneType'>
  Given value type: <class 'list'>
  Given value: []"""


def test_a_nested_type_error_names_the_key_and_the_file():
    configs = {"r.yaml": {"model": {"init_args": {"dims": "abc"}}}}
    assert describe_parse_error(NESTED, ["fit", "--config", "r.yaml"], configs) == (
        "r.yaml: model.init_args.dims: expected list[int] or null, got abc"
    )
    on_the_command_line = ["fit", "--config", "r.yaml", "--model.init_args.dims=abc"]
    assert describe_parse_error(NESTED, on_the_command_line, configs) == (
        "--model.init_args.dims: expected list[int] or null, got abc"
    )


def test_an_unknown_callback_argument_suggests_the_right_one():
    configs = {"r.yaml": {"trainer": {"callbacks": [{"class_path": "x"}]}}}
    assert describe_parse_error(CALLBACK, ["fit", "--config", "r.yaml"], configs) == (
        "r.yaml: trainer.callbacks.init_args.every_n_epoch: lightning.pytorch.callbacks.ModelCheckpoint has no "
        "argument 'every_n_epoch' (did you mean 'every_n_epochs'?)"
    )


def test_messages_of_one_line():
    argv = ["validate", "--config", "r.yaml"]
    assert describe_parse_error("unrecognized arguments: --bogus 3", argv, {}) == (
        "--bogus: not an option of smec validate (see smec validate --help)"
    )
    assert describe_parse_error("Subcommand 'fit' does not accept option 'trainer.max_epoch'", argv, {}) == (
        "trainer.max_epoch: not an option of smec fit (did you mean 'max_epochs'?)"
    )


def test_config_files_are_read_and_checked(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("trainer: {max_epochs: 2}\n")
    inline = '{"trainer": {"max_epochs": 3}}'
    assert read_config_files(["fit", "--config", str(good), f"--config={inline}"]) == {
        str(good): {"trainer": {"max_epochs": 2}}
    }
    (tmp_path / "bad.yaml").write_text("a: [\n")
    with pytest.raises(ConfigError, match=r"--config \S+bad\.yaml: not valid YAML: .* at line 2, column 1$"):
        read_config_files(["fit", "--config", str(tmp_path / "bad.yaml")])
    with pytest.raises(ConfigError, match=r"--config: expected a YAML file after it"):
        read_config_files(["fit", "--config"])
    with pytest.raises(ConfigError, match=r"--config \S+ is a folder, not a YAML file"):
        read_config_files(["fit", "--config", str(tmp_path)])
