import pytest

from anomalykit import ConfigError, Param
from anomalykit.params import merge_schemas, parse_assignments, validate_params

SCHEMA = merge_schemas(
    (
        Param("epochs", 10, "epochs", low=0),
        Param("lr", 1e-3, "learning rate", low=0.0),
        Param("mirrored", True, "switch"),
        Param("score", "a", "score", choices=("a", "r")),
        Param("width", None, "auto when None", type=int),
    )
)


def test_defaults_and_coercion_from_strings():
    out = validate_params(SCHEMA, {"epochs": "3", "lr": "0.5", "mirrored": "false", "score": "r", "width": "none"})
    assert out == {"epochs": 3, "lr": 0.5, "mirrored": False, "score": "r", "width": None}
    assert validate_params(SCHEMA, {}) == {"epochs": 10, "lr": 1e-3, "mirrored": True, "score": "a", "width": None}


@pytest.mark.parametrize(
    "given, fragment",
    [
        ({"epoch": 3}, "did you mean 'epochs'"),
        ({"epochs": "three"}, "expects int"),
        ({"epochs": 2.5}, "expects int"),
        ({"epochs": -1}, ">= 0"),
        ({"lr": "nan"}, "expects float"),
        ({"mirrored": "maybe"}, "expects bool"),
        ({"score": "b"}, "one of a, r"),
        ({"epochs": None}, "cannot be None"),
    ],
)
def test_bad_values_are_one_line_config_errors(given, fragment):
    with pytest.raises(ConfigError) as err:
        validate_params(SCHEMA, given, owner="m")
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_dashes_in_keys_map_to_underscores():
    s = merge_schemas((Param("n_critic", 5, "x"),))
    assert validate_params(s, {"n-critic": "2"}) == {"n_critic": 2}


def test_parse_assignments():
    assert parse_assignments(["a=1", " b = x=y "]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError):
        parse_assignments(["novalue"])


def test_param_needs_type_when_default_none():
    with pytest.raises(TypeError):
        Param("x", None, "no type")
