"""Context file lists the agent cannot write are refused by the shared validator (issue 10,
finding 9), with the offending path named."""

from __future__ import annotations

import base64

import pytest

from agent.context_files import NAME_MAX, PATH_MAX, ContextError, validate_context

OK = base64.b64encode(b"data").decode()


@pytest.mark.parametrize(
    ("files", "bad", "reason"),
    [
        ({"": OK}, "", "names no file"),
        ({".": OK}, ".", "names no file"),
        ({"./": OK}, "./", "names no file"),
        ({"a\x00b": OK}, "a\x00b", "NUL"),
        ({"x" * (NAME_MAX + 1): OK}, "x" * (NAME_MAX + 1), "component of 256 bytes"),
        ({"é" * 128: OK}, "é" * 128, "component of 256 bytes"),
        ({"/".join(["d" * 200] * 21): OK}, "/".join(["d" * 200] * 21), f"limit is {PATH_MAX}"),
        ({"/etc/passwd": OK}, "/etc/passwd", "absolute"),
        ({"a/../../b": OK}, "a/../../b", "'..'"),
        ({"f": OK, "f/child": OK}, "f", "is a file"),
        ({"d/f/child": OK, "d/f": OK}, "d/f", "is a file"),
        ({"a/b": OK, "a//b": OK}, "a//b", "same file"),
        ({"x.py": "not base64!"}, "x.py", "base64"),
        ({"\ud800.py": OK}, "\ud800.py", "Unicode"),
    ],
)
def test_context_that_the_agent_cannot_write_is_refused_naming_the_path(
    files: dict[str, str], bad: str, reason: str
) -> None:
    with pytest.raises(ContextError) as caught:
        validate_context(files)
    assert caught.value.path == bad
    assert reason in str(caught.value)


def test_ordinary_context_passes_with_canonical_paths() -> None:
    files = {"model_def.py": OK, "pkg/__init__.py": "", "./pkg/data.txt": OK, "x" * NAME_MAX: OK}
    canonical = validate_context(files)
    assert sorted(str(p) for p in canonical) == sorted(
        ["model_def.py", "pkg/__init__.py", "pkg/data.txt", "x" * NAME_MAX]
    )
