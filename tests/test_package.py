"""The tangled llm/ package: in sync with the chapters, and usable without the book."""

import subprocess
import sys
import textwrap

from bookbuild import project, tangle
from conftest import ROOT

# Importing llm must not need Jupyter, the build tools, or the data folder.
BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"bookbuild", "nbformat", "nbclient", "ipykernel", "IPython", "jupyter_client"}:
                raise ImportError(f"llm must not import {name}")
    sys.meta_path.insert(0, Block())
""")


def test_llm_matches_the_chapters():
    book = project.load(ROOT)
    assert tangle.check(book, tangle.tangle(book)) == []


def test_every_module_imports_without_the_book(tmp_path):
    modules = sorted(p.stem for p in (ROOT / "llm").glob("*.py") if p.stem != "__main__")
    code = BLOCKER + "import importlib\n" + "".join(f"importlib.import_module('llm.{m}')\n" for m in modules)
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True,
                   env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
