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


def test_every_test_the_docs_point_at_exists():
    """A claim in the README or docs/ that names its test (`tests/test_x.py::test_name`, or a
    `::test_name` after one) names one that exists."""
    import pathlib
    root = pathlib.Path(__file__).parent.parent
    missing = []
    for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = page.read_text()
        for match in re.finditer(r"`(tests/[\w/]+\.(?:py|c))((?:::\w+)?)`|`::(\w+)`", text):
            if match.group(1):
                current = root / match.group(1)
                if not current.exists():
                    missing.append(f"{page.name}: {match.group(1)}")
                    continue
                names = [match.group(2)[2:]] if match.group(2) else []
            else:
                names = [match.group(3)]
            for name in names:
                if not re.search(rf"def {name}\b", current.read_text()):
                    missing.append(f"{page.name}: {current.name}::{name}")
    assert not missing, missing
