"""Every lazily exported public name resolves, so the documented API cannot silently break."""

import importlib

import pytest


@pytest.mark.parametrize("package", ["trading_jax.data", "trading_jax.features", "trading_jax.evaluation"])
def test_every_exported_name_resolves(package):
    module = importlib.import_module(package)
    assert module.__all__
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_unknown_names_raise_attribute_error():
    import trading_jax.data

    with pytest.raises(AttributeError, match="no attribute 'load_ohclv'"):
        trading_jax.data.load_ohclv  # noqa: B018 (a typo must not pass silently)
