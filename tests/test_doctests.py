"""Every docstring example in the library runs and prints what it shows (in `make test-fast` too)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import snnconv

MODULES = sorted(info.name for info in pkgutil.walk_packages(snnconv.__path__, "snnconv.")
                 if not info.name.endswith(".__main__"))
#: modules known to hold examples: a doctest run that finds none there is broken, not passing
WITH_EXAMPLES = {"snnconv.levels", "snnconv.models", "snnconv.operating_point"}


def test_every_module_is_found():
    assert WITH_EXAMPLES | {"snnconv.sweep_spec", "snnconv.train"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (printed above)"
    assert result.attempted > 0 or name not in WITH_EXAMPLES, f"no example found in {name}"
