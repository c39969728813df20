"""llm.repro: seeding makes draws repeat; the cache builds once per config and code, atomically; its key follows
the code a run reaches (not hand-kept lists) and ignores docstrings, comments and layout."""

import ast
import functools
import linecache
import random
import shutil
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import llm
from llm.finetune import fit
from llm.repro import cache_key, cached, code_fingerprint, llm_imports, module_closure, normalized_source, set_seed

PACKAGE = Path(llm.__file__).parent


def draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_set_seed_repeats_every_generator():
    set_seed(123)
    first = draws()
    set_seed(123)
    assert draws() == first
    set_seed(124)
    assert draws() != first


def test_cached_builds_once_per_config(tmp_path):
    calls = []

    def build(directory):
        calls.append(directory)
        (directory / "result.txt").write_text(str(len(calls)))

    first = cached("thing", {"a": 1, "b": [2, 3]}, build, root=tmp_path)
    again = cached("thing", {"b": [2, 3], "a": 1}, build, root=tmp_path)  # key order does not matter
    other = cached("thing", {"a": 2, "b": [2, 3]}, build, root=tmp_path)
    assert first == again != other
    assert len(calls) == 2
    assert (first / "result.txt").read_text() == "1" and (other / "result.txt").read_text() == "2"
    assert first.parent == tmp_path and first.name.startswith("thing-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, other.name])


def version_one(directory):
    return 1


def version_two(directory):
    return 2


def test_cache_key_covers_config_and_code():
    config = {"x": 1}
    assert cache_key(config, version_one) == cache_key({"x": 1}, version_one)
    assert cache_key(config, version_one) != cache_key(config, version_two)
    assert cache_key(config, version_one) != cache_key({"x": 2}, version_one)
    assert len(cache_key(config, version_one)) == 12


def test_code_is_no_longer_listed_by_hand(tmp_path):
    with pytest.raises(TypeError):
        cached("old", {}, version_one, code=[llm], root=tmp_path)
    with pytest.raises(TypeError, match="must be a function"):
        code_fingerprint(functools.partial(version_one))


def test_failed_build_leaves_nothing(tmp_path):
    def broken(directory):
        (directory / "partial.txt").write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        cached("broken", {}, broken, root=tmp_path)
    assert list(tmp_path.iterdir()) == []

    result = cached("broken", {}, lambda d: (d / "ok.txt").write_text("done"), root=tmp_path)
    assert (result / "ok.txt").read_text() == "done"


def test_default_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_CACHE_DIR", str(tmp_path / "cache"))
    result = cached("env", {"k": "v"}, lambda d: (d / "f").write_text("x"))
    assert result.parent == tmp_path / "cache"


# -- normalized source --

CODE = '''"""Module."""
import math


class A:
    """Class."""

    def f(self, x):
        """F."""
        return math.sqrt(x)
'''

EDITED = '''"""Module, reworded."""
# a comment
import math
class A:
    """Class, reworded
    over two lines."""
    def f(self,
          x):  # wrapped
        \'\'\'F, in other quotes.\'\'\'
        return (math.sqrt(x))
'''


def test_normalized_source_ignores_docstrings_comments_and_layout():
    assert normalized_source(CODE) == normalized_source(EDITED)
    assert normalized_source(CODE) == normalized_source(textwrap.indent(CODE, "    "))  # as nested in a function
    assert normalized_source(CODE) != normalized_source(CODE.replace("sqrt(x)", "sqrt(x + 1)"))
    assert normalized_source(CODE) != normalized_source(CODE.replace('"""F."""', "x = abs(x)"))


def test_a_lone_string_is_a_cells_output_not_a_docstring():
    assert normalized_source('"hello"') != normalized_source('"goodbye"')
    assert normalized_source('"doc"\nx = 1') == normalized_source('"other doc"\nx = 1')
    assert normalized_source("def f():\n    'doc'\n") == normalized_source("def f():\n    'other'\n")


def test_normalized_source_does_not_print_empty_fields():
    # ast.dump prints empty lists and None before Python 3.13 and omits them after; the key must not change.
    dumped = normalized_source("def f(x):\n    return x\n")
    assert "[]" not in dumped and "None" not in dumped and "Return(value=Name(id='x'" in dumped


# -- the import walk --

def test_llm_imports_reads_every_form():
    source = """
import llm.bpe
import llm.model as model_module
from llm.data import read_text
from llm import lora, finetune
from llm.gpt2.sub import thing
from . import dataset
from .tokenizers import EOT
from .. import outside
import numpy, llmx.fake
from llmish import other


def lazy():
    from llm.generate import generate
"""
    assert llm_imports(source) == {"bpe", "model", "data", "lora", "finetune", "gpt2", "dataset", "tokenizers",
                                   "generate"}
    assert llm_imports("import llm\nx = 'from llm.bpe import y'  # import llm.model\n") == set()


def write_package(root: Path, modules: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (root / f"{name}.py").write_text(source)
    return root


CHAIN = {
    "a": '"""A."""\nfrom llm.b import helper\n',
    "b": "from . import c\n\ndef helper():\n    return c.VALUE\n",
    "c": "from llm import d, missing\nfrom llm import *\nVALUE = d.VALUE\n",
    "d": '"""D."""\nimport llm.a  # a cycle\nVALUE = 1\n',
    "z": "VALUE = 26\n",
}


def test_module_closure_follows_imports_through_other_modules(tmp_path):
    package = write_package(tmp_path / "llm", CHAIN)
    assert module_closure(["a"], package) == ["a", "b", "c", "d"]
    assert module_closure({"c", "nonexistent"}, package) == ["a", "b", "c", "d"]
    assert module_closure(["z"], package) == ["z"]
    assert module_closure([], package) == []


def fingerprint_with(package: Path, namespace: dict, source: str) -> str:
    exec(compile(source, register_cell(source), "exec"), namespace)
    return code_fingerprint(namespace["build"], package)


def test_fingerprint_reaches_modules_imported_through_others(tmp_path):
    package = write_package(tmp_path / "llm", CHAIN)
    build = "def build(directory):\n    a.run(directory)\n"
    namespace = {"__name__": "__main__", "a": types.ModuleType("llm.a")}
    before = fingerprint_with(package, namespace, build)

    (package / "z.py").write_text("VALUE = 0\n")  # not reached
    (package / "d.py").write_text('"""D, documented at length."""\nimport llm.a  # still a cycle\n\nVALUE = 1\n')
    assert fingerprint_with(package, namespace, build) == before
    (package / "d.py").write_text('"""D."""\nimport llm.a\nVALUE = 2\n')  # reached through a -> b -> c -> d
    assert fingerprint_with(package, namespace, build) != before


def test_fingerprint_follows_attributes_of_the_llm_package(tmp_path):
    package = write_package(tmp_path / "llm", CHAIN)
    namespace = {"__name__": "__main__", "llm": types.ModuleType("llm")}
    before = fingerprint_with(package, namespace, "def build(directory):\n    llm.c.run(directory)\n")
    (package / "d.py").write_text("VALUE = 3\n")
    assert fingerprint_with(package, namespace, "def build(directory):\n    llm.c.run(directory)\n") != before


# -- the real package: edits to a copy of llm/finetune.py --

def build_with_finetune(directory):
    fit(None, [], None, None, None)


@pytest.fixture
def package_copy(tmp_path) -> Path:
    copy = tmp_path / "llm"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def edit_fit(package: Path, edit) -> None:
    """Apply `edit(lines, fit_node)` to the lines of llm/finetune.py in `package`."""
    path = package / "finetune.py"
    text = path.read_text()
    fit_node = next(n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef) and n.name == "fit")
    lines = text.splitlines(keepends=True)
    edit(lines, fit_node)
    path.write_text("".join(lines))


def reword_docstrings(lines, fit_node):
    docstring_line = fit_node.body[0].lineno - 1
    assert '"""' in lines[docstring_line]
    lines[docstring_line] = lines[docstring_line].replace('"""', '"""Reworded, and now\n    over two lines. ', 1)
    module_docstring = next(i for i, line in enumerate(lines) if line.startswith('"""'))
    lines[module_docstring] = lines[module_docstring].replace('"""', '"""A new first sentence. ', 1)


def add_comments(lines, fit_node):
    first_statement = fit_node.body[1].lineno - 1
    indent = lines[first_statement][: len(lines[first_statement]) - len(lines[first_statement].lstrip())]
    lines.insert(first_statement, f"{indent}# a new comment, inside fit\n")
    lines.insert(0, "# a new comment at the top\n")


def change_one_line(lines, fit_node):
    returned = next(n for n in ast.walk(fit_node) if isinstance(n, ast.Return))
    line = lines[returned.end_lineno - 1]
    lines[returned.end_lineno - 1] = line[: returned.end_col_offset] + " + 0" + line[returned.end_col_offset:]


def test_docstring_and_comment_edits_to_finetune_keep_the_fingerprint(package_copy):
    assert "finetune" in module_closure(["finetune"], package_copy)
    before = code_fingerprint(build_with_finetune, package_copy)
    assert code_fingerprint(build_with_finetune, PACKAGE) == before  # the copy is the package

    edit_fit(package_copy, reword_docstrings)
    assert code_fingerprint(build_with_finetune, package_copy) == before
    edit_fit(package_copy, add_comments)
    assert code_fingerprint(build_with_finetune, package_copy) == before
    edit_fit(package_copy, change_one_line)
    assert code_fingerprint(build_with_finetune, package_copy) != before


def test_logic_change_in_a_module_finetune_imports_changes_the_fingerprint(package_copy):
    direct = llm_imports((package_copy / "finetune.py").read_text())
    indirect = sorted(set(module_closure(["finetune"], package_copy)) - direct - {"finetune"})
    assert indirect, "llm.finetune reaches no module through another one"
    before = code_fingerprint(build_with_finetune, package_copy)
    module = package_copy / f"{indirect[0]}.py"
    module.write_text(module.read_text() + "\nADDED_LATER = 1\n")
    assert code_fingerprint(build_with_finetune, package_copy) != before


# -- functions defined in a notebook --

def register_cell(source: str) -> str:
    """Register `source` in linecache under a made-up file name, as IPython does for each executed cell."""
    register_cell.count = getattr(register_cell, "count", 0) + 1
    filename = f"/tmp/ipykernel_0/cell-{register_cell.count}.py"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    return filename


def run_cell(namespace: dict, source: str) -> None:
    exec(compile(source, register_cell(source), "exec"), namespace)


HELPERS = """
import functools
import json


class Scaler:
    def __init__(self, factor):
        self.factor = factor

    def scale(self, x):
        return x * self.factor


@functools.cache
def offset():
    return 1


def helper(x):
    return x + offset()
"""

BUILD = """
def build(directory):
    scaler = Scaler(2)
    (directory / "out.txt").write_text(json.dumps(helper(scaler.scale(3))))
"""


def notebook_fingerprint(helpers: str = HELPERS, build: str = BUILD, *, blank_lines: int = 0) -> str:
    namespace = {"__name__": "__main__"}
    run_cell(namespace, "\n" * blank_lines + helpers)
    run_cell(namespace, "# the build cell\n" * blank_lines + build)
    return code_fingerprint(namespace["build"], PACKAGE)


def test_notebook_function_has_a_stable_fingerprint():
    first = notebook_fingerprint()
    assert notebook_fingerprint() == first
    assert notebook_fingerprint(blank_lines=7) == first  # other cells, other line numbers
    assert notebook_fingerprint(build=BUILD.replace("scaler = Scaler(2)", "scaler = Scaler(2)  # doubles")) == first
    assert notebook_fingerprint(HELPERS.replace("return x + offset()", '"""Adds one."""\n    return x + offset()')) \
        == first


@pytest.mark.parametrize("old, new", [
    ("return x + offset()", "return x - offset()"),  # a helper the build function calls
    ("return 1", "return 2"),  # a helper behind functools.cache, called by the helper
    ("return x * self.factor", "return x / self.factor"),  # a method of a class of the same notebook
])
def test_notebook_helpers_are_part_of_the_run(old, new):
    assert notebook_fingerprint(HELPERS.replace(old, new)) != notebook_fingerprint()


def test_build_changes_change_the_fingerprint():
    assert notebook_fingerprint(build=BUILD.replace("Scaler(2)", "Scaler(3)")) != notebook_fingerprint()


def test_notebook_function_using_llm_follows_the_package(package_copy):
    namespace = {"__name__": "__main__", "fit": fit}
    run_cell(namespace, "def build(directory):\n    fit(None, [], None, None, None)\n")
    before = code_fingerprint(namespace["build"], package_copy)
    edit_fit(package_copy, change_one_line)
    assert code_fingerprint(namespace["build"], package_copy) != before


def test_closures_are_followed(package_copy):
    def make_build(train):
        def build(directory):
            train(directory)
        return build

    before = code_fingerprint(make_build(fit), package_copy)
    assert code_fingerprint(make_build(print), package_copy) != before
    edit_fit(package_copy, change_one_line)
    assert code_fingerprint(make_build(fit), package_copy) != before
