"""Property-based tests: the chapter reader and the tangler hold under bad input.

Whatever a chapter holds, `qmd.read` returns a Document or raises a BookError
that names the file and a line inside it; `tangle.tangle` followed by
`tangle.write` either succeeds or raises such an error and leaves the project
(llm/ included) byte for byte as it was.  No other exception may escape.

Inputs come from two sources: documents assembled from .qmd pieces (prose,
headings, front matter, fenced cells with valid and broken `#|` options,
labels, exports, Python bodies, odd fences, tabs, unicode, CRLF), and the
book's real chapters after random line- and byte-level mutations.

The examples are derived from the tests themselves (`derandomize`), so every
run, in CI and locally, tries the same inputs and a failure replays exactly.
Set BOOKBUILD_FUZZ_EXPLORE=1 to draw fresh random inputs (ten times as many)
when hunting for new bugs; a failure then prints a `@reproduce_failure` blob.
"""

from __future__ import annotations

import keyword
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bookbuild import project, qmd, tangle
from bookbuild.qmd import BookError

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_BOOK = Path(__file__).parent / "fixtures" / "minibook"
FIXTURE_CHAPTERS = ("index.qmd", "chapters/01-first.qmd", "chapters/02-second.qmd")

EXPLORE = os.environ.get("BOOKBUILD_FUZZ_EXPLORE") == "1"


def fuzz(max_examples: int) -> settings:
    """Settings for one property: reproducible unless exploring, no per-example deadline.

    The deadline is off because a mutated 100 kB chapter legitimately takes far
    longer than a three-line document; the example counts keep the whole file
    at about ten seconds on two cores.  No example database: it would litter
    the repository with .hypothesis/, and derandomized runs do not need one.
    No health check needed suppressing.
    """
    return settings(
        max_examples=max_examples * (10 if EXPLORE else 1),
        deadline=None,
        derandomize=not EXPLORE,
        database=None,
        print_blob=True,
    )


# -- what a correct failure looks like ----------------------------------------------------------


def line_count(data: bytes) -> int:
    """Lines as an editor numbers them: breaks are \\n, \\r\\n or a lone \\r, nothing else."""
    return len(re.split(rb"\r\n|\r|\n", data))


def assert_located(error: BookError, sources: dict[Path, bytes]) -> None:
    """`error` names one of `sources` (absolute path -> content) and a line inside it."""
    assert type(error) is BookError
    path = Path(error.path)
    named = [p for p in sources if p == path or p.as_posix().endswith("/" + path.as_posix())]
    assert named, f"{error} names none of the chapters"
    assert error.line is not None, f"{error} names no line"
    assert 1 <= error.line <= line_count(sources[named[0]]), f"{error}: line outside the file"
    assert str(error) == f"{error.path}:{error.line}: {error.message}"


def read_or_error(path: Path, text: str | None = None):
    """The Document, or the BookError; any other exception fails the test."""
    try:
        return qmd.read(path, text)
    except BookError as e:
        return e


# -- strategies: .qmd documents from pieces --------------------------------------------------------

# Labels and module names come from small pools so that duplicates and clashes
# with the fixture book (squares, numbers, powers) are frequent.
VALID_LABELS = ["a", "b", "squares", "cube", "fig-line", "sec-x", "bpe_train"]
BAD_LABELS = ["1a", "-a", "a b", "''", "[a]", "{a: 1}", "null", "5", "é", "a\tb", '"a\\nb"', "a.b"]
labels = st.one_of(st.sampled_from(VALID_LABELS), st.sampled_from(BAD_LABELS), st.text(max_size=10))

VALID_MODULES = ["numbers", "powers", "fresh", "__main__", "extra"]
# Lowercase words that still make no importable module: keywords, a trailing newline, too long a file name.
TRICKY_MODULES = ["class", "import", "async", '"fresh\\n"', "yield", "x" * 300, "__init__"]
BAD_MODULES = [
    "Bad", "1x", "a.b", "a-b", "None", "''", "null", "[numbers]", "{a: b}", "llm/x", "../x", "5", "true", "é",
]
modules = st.one_of(
    st.sampled_from(VALID_MODULES), st.sampled_from(VALID_MODULES), st.sampled_from(TRICKY_MODULES),
    st.sampled_from(BAD_MODULES), st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), st.text(max_size=10),
)

# YAML values that are malformed, or well formed but rejected by PyYAML's constructors.
yaml_values = st.sampled_from([
    "true", "false", '"a string"', "[a, b]", "[a, b", "{a: 1", "2001-02-30", "2001-02-03", "!!int abc",
    "!!bool maybe", "!!timestamp x", "!!float q", "!!python/name:os.system", "!!binary \"@@\"", "&a [*a]",
    "*undefined", "|", ">-", '"unterminated', '"\\x00"', "\"\\q\"", "@reserved", "`tick", "- item", ": colon",
    "? [1]", "\t tab", "%TAG", "{a: !!set 3}", "!!omap 3", "a\u2028b", "a\x85b", "\x00",
])
option_keys = st.sampled_from(["label", "export", "tags", "fig-cap", "eval", "echo", "code-fold", "include"])
option_lines = st.one_of(
    st.builds("#| label: {}".format, labels),
    st.builds("#| export: {}".format, modules),
    st.builds("#| {}: {}".format, option_keys, yaml_values),
    st.builds("#|{}".format, st.text(max_size=20)),
    st.sampled_from(["#|", "#| ", "#|label: a", "#|  label: a", "#|\tlabel: a", "#| - a", "#| a", "#| ---",
                     "#| ...", "#| : x", "#| [a]", "#| label: a\x0c", "#| export: numbers  # comment"]),
)

TOO_DEEP = "x = " + "-" * 50_000 + "1"  # CPython's parser gives up with MemoryError, not SyntaxError
python_lines = st.one_of(
    st.sampled_from([
        "x = 1", "def f(x):", "    return x", "    pass", "class C:", "from __future__ import annotations",
        "import os", "if True:", "  y = 2", "def f(:", ")", "'''", '"""doc"""', "\\", "print('```')",
        "# comment", "", "\t", "return 1", "x = (", "nonlocal q", "x = 1\x00", "x = 1\x0cy = 2", "é = 1",
        "s = 'a\u2028b'", "s = 'a\x85b'", "(" * 250 + ")" * 250, "#| late: option",
        "```", "~~~", "    ```", "`````", "x = 1\r", "\ufeffx = 1", "<too deep>",
    ]).map(lambda line: TOO_DEEP if line == "<too deep>" else line),  # keeps the strategy's repr short
    st.text(max_size=30),
)

fences = st.sampled_from(["```", "```", "````", "~~~", "``", "`````", "~~~~"])
infos = st.sampled_from([
    "{python}", "{python}", "{.python}", "{python echo=false}", "{python}x", "python", "{r}", "", "{python",
    "{ python }", "{python}```", "{python} `x`", "{pythonic}", "{PYTHON}",
])


@st.composite
def cells(draw) -> list[str]:
    """A fenced block, usually a python cell; its closing fence may be missing or wrong."""
    fence = draw(fences)
    indent = draw(st.sampled_from(["", "", "", " ", "   ", "    ", "\t"]))
    lines = [indent + fence + draw(infos)]
    lines += draw(st.lists(option_lines, max_size=4))
    lines += draw(st.lists(python_lines, max_size=5))
    close = draw(st.sampled_from([fence, fence, fence, fence + "`", fence[:-1], fence + " x", "```", "~~~", None]))
    if close is not None:
        lines.append(draw(st.sampled_from(["", "", "  ", "\t"])) + close)
    return lines


prose_text = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8", exclude_characters="\r\n"), st.sampled_from("`~#|{}:-\t \u2028\x85\x0c")
    ),
    max_size=40,
)
prose = st.lists(st.one_of(prose_text, st.sampled_from(["", "---", "...", ":::", "::: {.callout-tip}",
                                                          "```{python}``` opens a cell", "``x``", "#| label: a"])),
                 min_size=1, max_size=4)
headings = st.builds(
    lambda level, title, ident: ["#" * level + " " + title + ident],
    st.integers(1, 4), prose_text,
    st.sampled_from(["", " {#sec-a}", " {#sec-a}", " {#fig-x}", " {#}", " {.unnumbered}"]),
)
front_matter = st.builds(
    lambda body, close: ["---", *body, *close],
    st.lists(st.one_of(st.builds("title: {}".format, prose_text), st.builds("{}: {}".format, option_keys, yaml_values),
                       st.sampled_from(["- a", "[a]", "plain", "a: [", "  indented: 1", "\tx: 1"])), max_size=4),
    st.sampled_from([["---"], ["---"], ["..."], []]),
)


# Cells likely to tangle, so that the tangler's own checks are reached.  A `__future__` import is
# fine at the top of a cell but not at the top of a module's second block.
python_statements = st.sampled_from([
    "x = 1", "def f():\n    return 1", "import math", "from __future__ import annotations", "class A:\n    pass",
    '"""A docstring."""', "y = [i for i in range(3)]",
])
# These parse but do not compile: an import of llm/ would fail on them.
uncompilable_statements = st.sampled_from([
    "return 1", "yield 2", "break", "nonlocal x", "await f()", "def g(a, a):\n    pass",
    "x = 1\nfrom __future__ import annotations",
])
exported_bodies = st.lists(
    st.one_of(python_statements, python_statements, python_statements, python_statements, uncompilable_statements,
              python_lines.filter(lambda line: "`" not in line)),
    max_size=2,
)


def exported_cell(label: str, module: str, body: list[str]) -> list[str]:
    return ["```{python}", f"#| label: {label}", f"#| export: {module}", *body, "```"]


exported_cells = st.builds(exported_cell, st.sampled_from(["a", "b", "c", "d", "e"]), modules, exported_bodies)


@st.composite
def qmd_documents(draw, blocks=st.one_of(prose, headings, cells(), cells()), front=front_matter, min_blocks=0):
    """A whole .qmd text: maybe front matter, then prose, headings, cells and raw lines."""
    lines: list[str] = list(draw(st.one_of(st.just([]), front)))  # a copy: st.just hands out one list
    for block in draw(st.lists(blocks, min_size=min_blocks, max_size=8)):
        lines += block
    if not lines:
        return draw(st.sampled_from(["", "\n", "\r\n", "\ufeff", "---"]))
    if draw(st.booleans()):  # one line ending throughout
        newline = draw(st.sampled_from(["\n", "\n", "\r\n", "\r"]))
        text = newline.join(lines) + draw(st.sampled_from([newline, ""]))
    else:  # mixed line endings
        ends = draw(st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=len(lines), max_size=len(lines)))
        text = "".join(line + end for line, end in zip(lines, ends))
    return draw(st.sampled_from(["", "", "", "\ufeff"])) + text


# -- strategies: mutated real chapters -------------------------------------------------------------


def _sources() -> dict[str, bytes]:
    found = {p.relative_to(ROOT).as_posix(): p for p in sorted(ROOT.glob("chapters/*.qmd"))}
    found.update({f"fixture/{name}": FIXTURE_BOOK / name for name in FIXTURE_CHAPTERS})
    return {name: path.read_bytes() for name, path in found.items()}


SOURCES = _sources()
INSERTS = [
    b"```", b"```{python}", b"````", b"~~~", b"---", b"...", b"#| label: squares", b"#| export: numbers",
    b"#| export: class", b"#| label: [", b"#|", b":::", b"```{python}\n#| label: fuzz\n#| export: numbers",
    b"\t```", b"\xef\xbb\xbf", b"\x00", b"\xff\xfe", b"#| eval: !!bool maybe", b"from __future__ import annotations",
    b"    ```{python}", b"```{python}\n```",
]


@st.composite
def mutated_chapters(draw) -> bytes:
    """A real chapter (the book's or the fixture's) after one to six random edits."""
    data = SOURCES[draw(st.sampled_from(sorted(SOURCES)))]
    for _ in range(draw(st.integers(1, 6))):
        lines = data.splitlines(keepends=True) or [b""]
        i = draw(st.integers(0, len(lines) - 1))
        n = draw(st.integers(1, 40))
        op = draw(st.sampled_from(["delete", "duplicate", "move", "insert", "insert", "truncate", "bytes", "newline"]))
        if op == "delete":
            del lines[i : i + n]
        elif op == "duplicate":
            lines[i:i] = lines[i : i + n]
        elif op == "move":
            block = lines[i : i + n]
            del lines[i : i + n]
            j = draw(st.integers(0, len(lines)))
            lines[j:j] = block
        elif op == "insert":
            lines.insert(i, draw(st.sampled_from(INSERTS)) + b"\n")
        elif op == "newline":
            lines[i] = lines[i].rstrip(b"\r\n") + draw(st.sampled_from([b"\r\n", b"\r", b"", b"\n\n"]))
        data = b"".join(lines)
        if op == "truncate":
            data = data[: draw(st.integers(0, len(data)))]
        elif op == "bytes":  # may split a UTF-8 sequence or add invalid bytes
            at = draw(st.integers(0, len(data)))
            cut = draw(st.integers(0, 3))
            data = data[:at] + draw(st.binary(max_size=4)) + data[at + cut :]
    return data


# -- the reader ------------------------------------------------------------------------------------


@fuzz(200)
@given(text=qmd_documents())
@example(text="# T\n\n```{python}\n#| label: a\n#| eval: 2001-02-30\nx = 1\n```\n")
@example(text="---\ntitle: !!bool maybe\n---\n")
@example(text="---\n- a list\n---\n# T\n")
@example(text="```{python}\n#| tags: " + "[" * 1000 + "]" * 1000 + "\n```\n")  # PyYAML recurses per level
@example(text="a\x0cb\x85c\u2028d\n```{python}\n#| label: [\n```\n")
def test_read_generated_documents(tmp_path_factory, text):
    """A generated document parses, or fails at a line of it; reading it from disk agrees."""
    path = tmp_path_factory.getbasetemp() / "generated.qmd"
    data = text.encode("utf-8")
    given_text = read_or_error(path, text)
    if isinstance(given_text, BookError):
        assert_located(given_text, {path: data})
    else:
        assert isinstance(given_text, qmd.Document)
    path.write_bytes(data)
    from_disk = read_or_error(path)
    # Files are read with universal newlines, so the same text given directly must read the same.
    assert type(from_disk) is type(given_text)
    if isinstance(from_disk, BookError):
        assert (from_disk.line, from_disk.message) == (given_text.line, given_text.message)
    else:  # repr, not ==: an option may be .nan, which equals nothing
        assert repr(from_disk) == repr(given_text)


@fuzz(150)
@given(data=mutated_chapters())
@example(data=SOURCES["fixture/chapters/01-first.qmd"] + b"\xff\n")
@example(data=b"# T\n\nok\n\n\xc3")
def test_read_mutated_chapters(tmp_path_factory, data):
    """A real chapter, mangled, parses or fails at a line of it; undecodable bytes included."""
    path = tmp_path_factory.getbasetemp() / "mutated.qmd"
    path.write_bytes(data)
    result = read_or_error(path)
    if isinstance(result, BookError):
        assert_located(result, {path: data})


# A document whose every piece is well formed must read back exactly as it was built.
safe_labels = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,8}", fullmatch=True)
free_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=30)


def yaml_lines(data: dict) -> list[str]:
    r"""`data` as YAML lines, split at \n only: the dump may hold a raw \x85, which YAML reads back."""
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=float("inf")).rstrip("\n").split("\n")


def _yaml_round_trips(text: str) -> bool:
    r"""PyYAML itself dumps some strings (a lone \x85, say) in a form it loads back differently."""
    return yaml.safe_load("\n".join(yaml_lines({"x": text}))) == {"x": text}


yaml_text = free_text.filter(_yaml_round_trips)


def _not_a_fence(line: str) -> bool:
    return not line.lstrip().startswith(("```", "~~~"))


@st.composite
def wellformed_documents(draw):
    """(text, expected code cells as (fence line, options, source)) for a valid document."""
    lines = ["# A title"]  # a first line of "---" would open front matter
    expected = []
    if draw(st.booleans()):
        lines = ["---", *yaml_lines({"title": draw(yaml_text)}), "---"]
    names = iter(draw(st.lists(safe_labels, unique=True, min_size=6, max_size=6)))
    for _ in range(draw(st.integers(0, 6))):
        lines += draw(st.lists(free_text.filter(_not_a_fence), max_size=3))
        lines += draw(st.lists(st.sampled_from(["Write ```{python}``` to open a cell.", "``` `x` ```", "---"]),
                               max_size=1))  # inline code and a rule, neither a fence nor front matter
        lines.append("")
        fence = draw(st.sampled_from(["```", "````", "~~~"]))
        options = {"label": next(names)}
        if draw(st.booleans()):
            options["fig-cap"] = draw(yaml_text)
        dumped = yaml_lines(options)
        not_closing = free_text.filter(lambda line: set(line.strip()) - set(fence[0]) or len(line.strip()) < 3)
        body = draw(st.lists(not_closing, max_size=4))
        if body and body[0].startswith("#|"):
            body[0] = " " + body[0]
        expected.append((len(lines) + 1, options, "\n".join(body)))
        lines += [fence + draw(st.sampled_from(["{python}", "{.python}", "{python echo=false}"])),
                  *("#| " + line for line in dumped), *body, fence]
    return "\n".join(lines) + "\n", expected


@fuzz(100)
@given(document=wellformed_documents())
@example(document=("x\x0cy\n```{python}\n#| label: a\nx = 1\x0c\n```\n", [(2, {"label": "a"}, "x = 1\x0c")]))
@example(document=("Write ```{python}``` to open a cell.\n```{python}\n#| label: a\n```\n", [(2, {"label": "a"}, "")]))
def test_wellformed_documents_read_back(document):
    """Code cells of a valid document come back with their lines, options and source unchanged."""
    text, expected = document
    doc = qmd.read("chapters/wellformed.qmd", text)
    assert [(c.line, c.options, c.source) for c in doc.code_cells] == expected
    lines = text.split("\n")
    for cell in doc.code_cells:  # the line numbers point at the fence and at the first line of code
        assert lines[cell.line - 1].lstrip().startswith(("```", "~~~"))
        if cell.source:
            assert lines[cell.code_line - 1] == cell.source.split("\n")[0]


# -- the tangler -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tangled_book(tmp_path_factory) -> Path:
    """The fixture book with llm/ already tangled: the state every example starts from."""
    root = tmp_path_factory.mktemp("fuzz") / "book"
    shutil.copytree(FIXTURE_BOOK, root)
    book = project.load(root)
    tangle.write(book, tangle.tangle(book))
    return root


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (content) and directory (None) under root."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def tangle_cleanly(template: Path, chapter: str, data: bytes) -> None:
    """Replace one chapter with `data` and tangle: success, or a located BookError and no change."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "book"
        shutil.copytree(template, root)
        (root / chapter).write_bytes(data)
        before = snapshot(root)
        book = project.load(root)
        try:
            tangle.write(book, tangle.tangle(book))
        except BookError as e:
            assert_located(e, {root / name: (root / name).read_bytes() for name in FIXTURE_CHAPTERS})
            assert snapshot(root) == before, "a failed tangle changed the project"
        else:
            for module in sorted((root / "llm").iterdir()):  # each one importable as llm.<name>
                assert module.suffix == ".py" and module.stem.isidentifier() and not keyword.iskeyword(module.stem)
                compile(module.read_text(encoding="utf-8"), str(module), "exec", dont_inherit=True)
            assert tangle.check(book, tangle.tangle(book)) == []
            assert tangle.write(book, tangle.tangle(book)) == []
            leftovers = {p.name for p in root.iterdir()} - {p.name for p in template.iterdir()}
            assert not leftovers, f"tangle left {leftovers} behind"


# Generated Python may hold escapes like '\d', which compile() warns about; that is not under test.
quiet_parse = pytest.mark.filterwarnings("ignore::SyntaxWarning", "ignore::DeprecationWarning")
chapters = st.sampled_from(FIXTURE_CHAPTERS)


@quiet_parse
@fuzz(100)
@given(chapter=chapters,
       text=qmd_documents(st.one_of(prose, exported_cells, exported_cells), front=st.just([]), min_blocks=1))
@example(chapter="chapters/01-first.qmd",
         text="```{python}\n#| label: a\n#| export: fresh\nx = 1\n```\n\n```{python}\n#| label: b\n"
              "#| export: fresh\nfrom __future__ import annotations\n```\n")
@example(chapter="chapters/01-first.qmd", text='```{python}\n#| label: a\n#| export: "fresh\\n"\nx = 1\n```\n')
@example(chapter="chapters/01-first.qmd", text=f"```{{python}}\n#| label: a\n#| export: {'x' * 300}\nx = 1\n```\n")
@example(chapter="chapters/01-first.qmd", text="```{python}\n#| label: a\n#| export: class\nx = 1\n```\n")
@example(chapter="index.qmd", text="```{python}\n#| label: a\n#| export: fresh\nx = " + "-" * 50_000 + "1\n```\n")
def test_tangle_generated_chapter(tangled_book, chapter, text):
    """Tangling a book with one generated chapter succeeds or fails at a line, writing nothing."""
    tangle_cleanly(tangled_book, chapter, text.encode("utf-8"))


@quiet_parse
@fuzz(100)
@given(chapter=chapters,
       exports=st.lists(st.tuples(st.one_of(st.just("fresh"), modules), exported_bodies), min_size=1, max_size=4))
def test_tangle_exported_cells(tangled_book, chapter, exports):
    """Chapters of nothing but exported cells, uniquely labelled, reach the tangler's own checks more often."""
    cells = [exported_cell(f"cell-{i}", module, body) for i, (module, body) in enumerate(exports)]
    tangle_cleanly(tangled_book, chapter, "\n\n".join("\n".join(cell) for cell in cells).encode("utf-8"))


@quiet_parse
@fuzz(50)
@given(chapter=chapters, data=mutated_chapters())
def test_tangle_mutated_chapter(tangled_book, chapter, data):
    """Tangling a book with one mangled real chapter succeeds or fails at a line, writing nothing."""
    tangle_cleanly(tangled_book, chapter, data)
