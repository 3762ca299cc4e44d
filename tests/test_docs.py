"""Every public function documents every one of its arguments (help() is the API reference)."""
import inspect
import re

import pytest

import fastopt

PUBLIC = [getattr(fastopt, name) for name in fastopt.__all__ if inspect.isfunction(getattr(fastopt, name))]


@pytest.mark.parametrize("fn", PUBLIC, ids=[f.__name__ for f in PUBLIC])
def test_every_argument_is_documented(fn):
    doc = fn.__doc__ or ""
    documented = set()
    if "Args:" in doc:
        args = doc[doc.index("Args:"):].split("Returns:")[0]
        for entry in re.findall(r"(?:^\s{6}|\.\s{2})([a-z_][a-z_0-9, ]*):", args, re.M):  # entries, some two a line
            documented |= {n.strip() for n in entry.split(",")}
    missing = [p for p in inspect.signature(fn).parameters if p not in documented]
    if missing and "Args:" not in doc:  # a one-line function: its arguments named in the text
        missing = [p for p in missing if p not in doc]
    assert not missing, f"{fn.__name__} does not document {missing}"
