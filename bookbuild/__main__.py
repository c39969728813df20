"""Command line: `python -m bookbuild {tangle,check,execute,book}` (the Makefile calls these)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time

from . import project, tangle
from .qmd import BookError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bookbuild", description=__doc__)
    parser.add_argument("--root", default=".", help="the book's root directory (holding _quarto.yml)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("tangle", help="write llm/ from the chapters' exported cells")
    commands.add_parser("check", help="fail with a diff when llm/ differs from the chapters")
    run = commands.add_parser("execute", help="execute chapters whose freeze is stale (all by default)")
    run.add_argument("chapters", nargs="*", help="chapter files, e.g. chapters/01-tokens.qmd")
    run.add_argument("--force", action="store_true", help="execute even when the freeze is current")
    book = commands.add_parser("book", help="build _book/ (website, PDF and EPUB)")
    book.add_argument("--format", choices=["html", "pdf", "epub"], action="append",
                      help="build only this format (repeatable); default all three")
    book.add_argument("--renderer", choices=["auto", "quarto", "embedded"], default="auto",
                      help="auto uses quarto when it is on PATH, else the embedded renderer")
    check_site = commands.add_parser("verify", help="check the built site: links, anchors, images, cross-references, PDF")
    check_site.add_argument("--browser", action="store_true",
                            help="also open every page in headless Chromium at desktop and phone widths, light and "
                                 "dark, and keep screenshots in _book/screenshots/")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    try:
        book_project = project.load(args.root)
        if args.command == "tangle":
            changed = tangle.write(book_project, tangle.tangle(book_project))
            print(f"tangled llm/: {', '.join(changed) if changed else 'no changes'}")
        elif args.command == "check":
            problems = tangle.check(book_project, tangle.tangle(book_project))
            if problems:
                print("\n\n".join(problems), file=sys.stderr)
                return 1
            print(f"llm/ matches the chapters ({time.perf_counter() - started:.2f}s)")
        elif args.command == "execute":
            from . import build  # Jupyter and pandoc load only for the commands that need them

            chapters = [book_project.chapter(c) for c in args.chapters] or None
            build.notebooks(book_project, chapters, force=args.force)
        elif args.command == "book":
            if args.renderer == "quarto" or (args.renderer == "auto" and shutil.which("quarto")):
                formats = [f"--to={f}" for f in args.format or []]
                return subprocess.call(["quarto", "render", *formats], cwd=book_project.root)
            from . import build

            build.build(book_project, formats=tuple(args.format or ("html", "pdf", "epub")))
        elif args.command == "verify":
            from . import verify

            problems = verify.verify_site(book_project)
            if args.browser and book_project.output_dir.is_dir():
                from . import browser

                problems += browser.main_check(book_project.output_dir)
            for problem in problems:
                print(problem, file=sys.stderr)
            if problems:
                return 1
            print(f"{book_project.output_dir.name}/ verified: links, anchors, images, cross-references, PDF and EPUB"
                  + (", and in a browser" if args.browser else ""))
    except BookError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
