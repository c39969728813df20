"""Check a built website the way a reader would notice its faults.

Every link between pages (and to anchors inside them) must resolve, every
image must exist, no cross-reference may be left unresolved (`??`, a raw
`@fig-...`), every chapter must be in the navigation, and the PDF must exist.
The EPUB must hold every image it shows and no unresolved reference, and pass
`epubcheck` (Debian's package), the reference validator of the EPUB standard.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

from .html import page_name
from .project import Project

_RAW_REF = re.compile(r"(\?\?|\?@|(?<![\w.])@(fig|sec|tbl)-[\w-]+)")


class _Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids, self.links, self.images, self.text = set(), [], [], []
        self.sidebar_links = []
        self._code_depth = 0
        self._in_sidebar = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "aside":
            self._in_sidebar = True
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
            if self._in_sidebar:
                self.sidebar_links.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag in ("code", "pre"):
            self._code_depth += 1
        if "citation" in (attrs.get("class") or "").split():
            self.text.append(f"unresolved citation {attrs.get('data-cites')}")

    def handle_endtag(self, tag):
        if tag in ("code", "pre"):
            self._code_depth = max(0, self._code_depth - 1)
        if tag == "aside":
            self._in_sidebar = False

    def handle_data(self, data):
        if not self._code_depth:
            self.text.append(data)


def verify_site(project: Project, site: Path | None = None, log=None) -> list[str]:
    """Return the problems found in the built site (empty when it is sound); log(message) hears what was not
    checked (stderr by default)."""
    site = site or project.output_dir
    if not site.is_dir():
        return [f"{site} does not exist: build the book first (make book)"]
    pages = {}
    for path in sorted(site.glob("*.html")):
        parser = _Page()
        parser.feed(path.read_text(encoding="utf-8"))
        pages[path.name] = parser
    problems = []
    for chapter in project.chapters:
        if page_name(chapter) not in pages:
            problems.append(f"{page_name(chapter)}: no page for {chapter.path}")
    for name, page in pages.items():
        missing_nav = [page_name(c) for c in project.chapters if page_name(c) not in page.sidebar_links]
        if missing_nav:
            problems.append(f"{name}: the sidebar does not link {', '.join(missing_nav)}")
        for href in page.links:
            problem = _check_link(site, name, href, pages)
            if problem:
                problems.append(f"{name}: {problem}")
        for src in page.images:
            if not src or not (site / unquote(src)).is_file():
                problems.append(f"{name}: image {src!r} does not exist")
        for m in _RAW_REF.finditer(" ".join(page.text)):
            problems.append(f"{name}: unresolved cross-reference {m.group(0)!r}")
        if any(t.startswith("unresolved citation") for t in page.text):
            problems.extend(f"{name}: {t}" for t in page.text if t.startswith("unresolved citation"))
    pdf = site / f"{project.output_file}.pdf"
    if not pdf.is_file() or not pdf.read_bytes()[:5] == b"%PDF-":
        problems.append(f"{pdf.name}: the PDF is missing or not a PDF")
    problems.extend(verify_epub(site / f"{project.output_file}.epub", log=log))
    return problems


def verify_epub(epub: Path, log=None) -> list[str]:
    """The EPUB's own checks (images, references), then epubcheck's; without epubcheck the second part is skipped
    with a message, except under CI (CI=true), where a missing validator is a failure."""
    if not zipfile.is_zipfile(epub):
        return [f"{epub.name}: the EPUB is missing or not a zip archive"]
    problems = []
    with zipfile.ZipFile(epub) as archive:
        names = set(archive.namelist())
        for name in sorted(n for n in names if n.endswith(".xhtml")):
            page = _Page()
            page.feed(archive.read(name).decode("utf-8"))
            for src in page.images:
                if posixpath.normpath(posixpath.join(posixpath.dirname(name), unquote(src))) not in names:
                    problems.append(f"{epub.name}: {name}: image {src!r} is not in the book")
            for m in _RAW_REF.finditer(" ".join(page.text)):
                problems.append(f"{epub.name}: {name}: unresolved cross-reference {m.group(0)!r}")
    command = epubcheck_command()
    if command is None:
        if os.environ.get("CI") == "true":
            return problems + [f"{epub.name}: epubcheck is not installed, and CI must validate the EPUB "
                               "(apt-get install epubcheck)"]
        (log or (lambda m: print(m, file=sys.stderr)))(
            f"{epub.name}: not validated, epubcheck is not installed (apt-get install epubcheck)")
        return problems
    result = subprocess.run([*command, "--quiet", str(epub)], capture_output=True, text=True)
    findings = [line.strip() for line in (result.stdout + result.stderr).splitlines()
                if line.startswith(("FATAL", "ERROR", "WARNING"))]
    if result.returncode and not findings:
        findings = [f"epubcheck failed with exit status {result.returncode}: {result.stderr.strip()[-500:]}"]
    return problems + [f"{epub.name}: {finding}" for finding in findings]


def epubcheck_command() -> list[str] | None:
    """How to run epubcheck here. Debian installs it as an executable jar, which runs by itself only where the
    kernel hands jars to Java (binfmt_misc), so a jar is run with `java -jar`."""
    path = shutil.which("epubcheck")
    if path is None:
        return None
    with open(path, "rb") as f:
        is_jar = f.read(2) == b"PK"
    if not is_jar:
        return [path]
    java = shutil.which("java")
    return [java, "-jar", path] if java else None


def _check_link(site: Path, page: str, href: str, pages: dict) -> str | None:
    url = urlparse(href)
    if url.scheme or href.startswith("//") or href.startswith("mailto:"):
        return None  # external links are not checked offline
    target = unquote(url.path) or page
    if not (site / target).exists():
        return f"link {href!r} points to a missing file"
    if url.fragment and target.endswith(".html") and url.fragment not in pages[target].ids:
        return f"link {href!r} points to a missing anchor"
    return None
