import pytest

from stylecore.errors import WeightsError
from stylecore.weights import builtin_names, parse_spec


def test_unknown_builtin_names_the_available_ones():
    with pytest.raises(WeightsError) as e:
        parse_spec("builtin:no_such_model", what="model")
    msg = str(e.value)
    assert "unknown built-in weights 'builtin:no_such_model'" in msg and "available:" in msg
    for name in builtin_names():
        assert name in msg
    with pytest.raises(WeightsError):
        parse_spec("builtin:../weights", what="model")
