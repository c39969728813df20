"""Execute chapters in a Jupyter kernel and freeze the results.

A chapter runs top to bottom in a fresh kernel whose working directory is the
chapter's folder (as under Quarto). The executed notebook is written to
`_notebooks/<chapter>.ipynb` together with a freeze key: a hash of what the
outputs depend on, namely the chapter's code cells, their options that change
execution, and every `llm` module they import, directly or through other
modules, all without comments and docstrings. While the key matches, the
chapter is not executed again, like Quarto's `freeze: auto`; the render then
shows the chapter's current text with the frozen outputs, so a prose,
docstring or comment edit costs no re-execution.

The frozen notebooks are also what nbval re-runs in CI.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError

from llm.repro import llm_imports, module_closure, normalized_source

from . import qmd
from .project import Chapter, Project
from .qmd import BookError

# Bump when the way chapters are executed changes, to invalidate every freeze.
EXECUTOR_VERSION = "1"
# Cell options that change what runs or what is recorded; the others (fig-cap, echo, code-fold, ...) only change
# how the render shows the cell, and the render reads them from the current text.
KEYED_OPTIONS = ("eval", "tags", "label", "output", "include", "export")


def to_notebook(document: qmd.Document) -> nbformat.NotebookNode:
    """The chapter as a notebook: markdown cells and code cells with their `#|` options."""
    nb = nbformat.v4.new_notebook()
    nb.metadata.update({
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    })
    for index, cell in enumerate(document.cells):
        # Stable ids, from position and label, so that re-executing a chapter changes only its outputs.
        cell_id = f"{index:03d}-{cell.label}"[:64] if cell.kind == "code" and cell.label else f"{index:03d}"
        if cell.kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(cell.source, id=cell_id))
            continue
        source = "\n".join([f"#| {line}" for line in cell.option_lines] + [cell.source])
        code = nbformat.v4.new_code_cell(source.strip("\n"), id=cell_id)
        tags = list(cell.options.get("tags") or [])
        if cell.options.get("eval") is False:
            tags += ["skip-execution", "nbval-skip"]
        if tags:
            code.metadata["tags"] = tags
        code.metadata["book"] = {"line": cell.line, **({"label": cell.label} if cell.label else {})}
        nb.cells.append(code)
    return nb


def freeze_key(project: Project, chapter: Chapter) -> str:
    """The hash that decides whether the chapter's frozen outputs still hold (see the module docstring)."""
    return _freeze_key(project, qmd.read(project.root / chapter.path))


def _freeze_key(project: Project, document: qmd.Document) -> str:
    digest = hashlib.sha256(f"executor {EXECUTOR_VERSION}\n".encode())
    imported: set[str] = set()
    for cell in document.code_cells:
        options = {name: cell.options[name] for name in KEYED_OPTIONS if name in cell.options}
        try:
            code = normalized_source(cell.source)
            imported |= llm_imports(cell.source)
        except SyntaxError:  # not plain Python (an IPython magic): the text as written
            code = cell.source
        digest.update(f"\ncell {json.dumps(options, sort_keys=True, default=str)}\n{code}".encode())
    for module in module_closure(imported, project.package_dir):
        source = (project.package_dir / f"{module}.py").read_text(encoding="utf-8")
        digest.update(f"\nllm/{module}.py\n{normalized_source(source)}".encode())
    return digest.hexdigest()


def notebook_path(project: Project, chapter: Chapter) -> Path:
    return project.notebooks_dir / f"{chapter.stem}.ipynb"


def frozen(project: Project, chapter: Chapter) -> nbformat.NotebookNode | None:
    """The chapter as it reads now with the outputs of its frozen notebook, if the freeze is up to date.

    The key covers every code cell, so the current and the frozen code cells correspond one to one; the markdown,
    docstrings and comments come from the current text, which is what the render must show.
    """
    path = notebook_path(project, chapter)
    if not path.exists():
        return None
    document = qmd.read(project.root / chapter.path)
    old = nbformat.read(path, as_version=4)
    if old.metadata.get("book", {}).get("freeze_key") != _freeze_key(project, document):
        return None
    nb = to_notebook(document)
    nb.metadata = old.metadata
    new_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    old_cells = [cell for cell in old.cells if cell.cell_type == "code"]
    for new, run in zip(new_cells, old_cells, strict=True):
        new.outputs, new.execution_count = run.outputs, run.execution_count
    return nb


def execute(project: Project, chapter: Chapter, log=print) -> nbformat.NotebookNode:
    """Run the chapter in a fresh kernel; on success freeze it and write its figures.

    On failure raise BookError pointing at the failing cell; the previous
    frozen notebook and figures are left untouched.
    """
    document = qmd.read(project.root / chapter.path)
    key = _freeze_key(project, document)
    nb = to_notebook(document)
    workdir = project.root / chapter.path.parent
    client = NotebookClient(nb, kernel_name="python3", timeout=None, allow_errors=False,
                            resources={"metadata": {"path": str(workdir)}})
    code_cells = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    started = time.perf_counter()
    # The kernel's own chatter (transport warnings) goes to a log that is shown only if the kernel dies.
    with tempfile.TemporaryFile("w+") as kernel_log, \
            client.setup_kernel(env=_kernel_env(project), cwd=str(workdir), stderr=kernel_log):
        for n, (index, cell) in enumerate(code_cells, 1):
            info = cell.metadata["book"]
            t0 = time.perf_counter()
            try:
                client.execute_cell(cell, index)
            except (CellExecutionError, DeadKernelError) as e:
                kernel_log.seek(0)
                detail = _strip_ansi(str(e)) if isinstance(e, CellExecutionError) else f"the kernel died\n{kernel_log.read()[-2000:]}"
                raise BookError(chapter.path, info["line"],
                                f"cell {info.get('label', '(unlabelled)')!r} failed:\n{detail}") from None
            seconds = time.perf_counter() - t0
            if seconds > 2:
                log(f"  {chapter.path}:{info['line']} {info.get('label', '')} ({n}/{len(code_cells)}) {seconds:.1f}s")
    nb.metadata["book"] = {
        "chapter": chapter.path.as_posix(),
        "freeze_key": key,
        "provenance": provenance(project, document, time.perf_counter() - started),
    }
    _write_atomic(notebook_path(project, chapter), nbformat.writes(nb) + "\n")
    shutil.copy(project.root / "chapters" / "matplotlibrc", project.notebooks_dir / "matplotlibrc")
    write_figures(project, chapter, nb)
    return nb


def _kernel_env(project: Project) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PYTHONHASHSEED": "0",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(project.root), env.get("PYTHONPATH")])),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "TQDM_MININTERVAL": "5",  # fewer progress redraws stored in the notebook
    })
    return env


def provenance(project: Project, document: qmd.Document, seconds: float) -> dict:
    """Where the chapter's numbers come from: commit, seed and hardware."""
    seed = None
    for cell in document.code_cells:
        m = re.search(r"set_seed\((\d+)\)", cell.source)
        if m:
            seed = int(m.group(1))
            break
    import torch  # only for the hardware description

    return {
        "commit": _git(project, "rev-parse", "--short", "HEAD"),
        "dirty": bool(_git(project, "status", "--porcelain", "--", "chapters", "llm")),
        "seed": seed,
        "hardware": {
            "cpu": _cpu_name(),
            "cpus": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "python": platform.python_version(),
        "torch": torch.__version__,
        "seconds": round(seconds, 1),
    }


def _git(project: Project, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=project.root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def figure_outputs(nb: nbformat.NotebookNode):
    """Yield (cell label, index within the cell, png bytes) for every image output."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        label = cell.metadata.get("book", {}).get("label", f"cell-{cell.metadata.get('book', {}).get('line')}")
        images = [o["data"]["image/png"] for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        for i, data in enumerate(images):
            yield label, i, base64.b64decode(data)


def figure_name(label: str, index: int) -> str:
    return f"{label}.png" if index == 0 else f"{label}-{index + 1}.png"


def write_figures(project: Project, chapter: Chapter, nb: nbformat.NotebookNode) -> None:
    """Refresh figures/<chapter>/ with the run's images and their provenance."""
    folder = project.figures_dir / chapter.stem
    staging = folder.with_name(f".{chapter.stem}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    names = []
    for label, index, png in figure_outputs(nb):
        name = figure_name(label, index)
        (staging / name).write_bytes(png)
        names.append(name)
    if names:
        record = {"chapter": chapter.path.as_posix(), "figures": names, **nb.metadata["book"]["provenance"]}
        (staging / "provenance.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    if names:
        os.replace(staging, folder)
    else:
        shutil.rmtree(staging)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
