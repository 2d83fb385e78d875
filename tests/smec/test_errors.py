from datamodules.errors import InputError
from smec.errors import ConfigError


def test_config_error_is_an_input_error_and_a_value_error():
    assert issubclass(ConfigError, InputError)
    assert issubclass(ConfigError, ValueError)
