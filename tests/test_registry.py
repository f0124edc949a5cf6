"""The one registry style: lookup by name, registration, and the error that names the allowed names."""

import pytest

from splitlib.registry import Registry, UnknownNameError


def test_lookup_returns_the_registered_entry_in_registration_order():
    reg = Registry("colour", {"red": 1, "green": 2})
    reg.register("blue", 3)
    assert reg["green"] == 2
    assert reg.names() == ["red", "green", "blue"]
    assert "blue" in reg and "pink" not in reg
    assert len(reg) == 3 and list(reg) == ["red", "green", "blue"]


def test_register_works_as_a_decorator():
    reg = Registry("reward")

    @reg.register("one")
    def one():
        return 1

    assert reg["one"] is one


def test_unknown_name_error_names_the_kind_the_name_and_every_allowed_name():
    reg = Registry("policy", {"split": 1, "small_only": 2})
    with pytest.raises(UnknownNameError, match=r"unknown policy 'nope'; allowed: split, small_only"):
        reg["nope"]


def test_unknown_name_error_is_a_value_error_so_parameter_checks_catch_it():
    assert issubclass(UnknownNameError, ValueError)


def test_registering_a_name_twice_is_refused():
    reg = Registry("mode", {"a": 1})
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", 2)
