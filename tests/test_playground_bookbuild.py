"""What the embedded renderer learned for the playground page: appendices, Quarto's conditional content, and the
project options `resources` and `pre-render`."""

import sys
from pathlib import Path

import pytest
import yaml

from bookbuild import build, execute, html, pandoc, project
from bookbuild.qmd import BookError


def configure(root: Path, edit) -> project.Project:
    """The fixture book with its _quarto.yml changed by `edit(config)`."""
    path = root / "_quarto.yml"
    config = yaml.safe_load(path.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config))
    return project.load(root)


def test_appendices_follow_the_chapters_numbered_with_letters(minibook):
    def move_second_to_appendices(config):
        config["book"]["chapters"].remove("chapters/02-second.qmd")
        config["book"]["appendices"] = ["chapters/02-second.qmd"]

    book = configure(minibook, move_second_to_appendices)
    assert [(c.path.as_posix(), c.number) for c in book.chapters] == [
        ("index.qmd", None), ("chapters/01-first.qmd", 1), ("chapters/02-second.qmd", "A")]
    doc = pandoc.parse("# Extra {#sec-extra}\n\n## Part {#sec-extra-part}\n\n![A line.](line.png){#fig-line}\n")
    targets = pandoc.number_chapter(doc, "A", "02-second.html")
    assert [targets[i].text() for i in ("sec-extra", "sec-extra-part", "fig-line")] == [
        "Appendix A", "Section A.1", "Figure A.1"]
    titles = {c: c.stem for c in book.chapters}
    sidebar = html._page(book, book.chapters[0], titles, "", "", "", None, None, None)
    assert sidebar.index('<li class="part">Appendices</li>') < sidebar.index('href="02-second.html"')


def test_a_missing_appendix_is_named(minibook):
    with pytest.raises(BookError, match="chapter chapters/03-none.qmd does not exist"):
        configure(minibook, lambda config: config["book"].update(appendices=["chapters/03-none.qmd"]))


@pytest.mark.parametrize("fmt, shown", [("html", ["web", "not paper", "not paper either"]),
                                        ("typst", ["paper", "not web"])])
def test_conditional_content_follows_the_output_format(fmt, shown):
    markdown = "\n\n".join([
        '::: {.content-visible when-format="html"}\nweb\n:::',
        '::: {.content-visible when-format="pdf"}\npaper\n:::',
        '::: {.content-hidden when-format="pdf"}\nnot paper\n:::',
        '::: {.content-visible unless-format="html"}\nnot web\n:::',
        '::: {.content-hidden unless-format="html"}\nnot paper either\n:::',
    ])
    doc = pandoc.finish(pandoc.parse(markdown), {}, fmt)
    assert [pandoc.stringify(block) for block in doc["blocks"]] == shown


def test_pre_render_runs_in_the_root_with_the_builds_python(minibook):
    command = "python -c \"import sys; open('made.txt', 'w').write(sys.executable)\""
    book = configure(minibook, lambda config: config["project"].update({"pre-render": command}))
    logged = []
    build.pre_render(book, log=logged.append)
    assert logged == [f"pre-render: {command}"]
    assert Path((minibook / "made.txt").read_text()).parent == Path(sys.executable).parent


def test_a_failing_pre_render_stops_the_build(minibook):
    book = configure(minibook, lambda config: config["project"].update({"pre-render": ["true", "exit 3"]}))
    with pytest.raises(BookError, match="pre-render command 'exit 3' failed with exit status 3"):
        build.pre_render(book, log=lambda *_: None)


def test_resources_are_copied_with_their_paths(minibook, tmp_path):
    (minibook / "assets" / "deep").mkdir(parents=True)
    (minibook / "assets" / "app.js").write_text("// app")
    (minibook / "assets" / "deep" / "model.bin").write_bytes(b"\0\1")
    (minibook / "notes.txt").write_text("notes")
    (minibook / "other.txt").write_text("not a resource")
    book = configure(minibook, lambda config: config["project"].update(resources=["/assets/", "notes.txt"]))
    assert book.resource_files() == [Path("assets/app.js"), Path("assets/deep/model.bin"), Path("notes.txt")]
    site = tmp_path / "site"
    build.copy_resources(book, site)
    assert sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()) == [
        "assets/app.js", "assets/deep/model.bin", "notes.txt"]
    assert (site / "assets" / "deep" / "model.bin").read_bytes() == b"\0\1"
    for chapter in book.chapters:  # the stamp also hashes the frozen notebooks, which this fresh copy lacks
        execute.notebook_path(book, chapter).parent.mkdir(exist_ok=True)
        execute.notebook_path(book, chapter).write_text("{}")
    stamp = build._stamp(book, ("html",))
    (minibook / "assets" / "app.js").write_text("// changed")
    assert build._stamp(book, ("html",)) != stamp, "a changed resource must rebuild the site"
