"""Build tools for the book: tangle the chapters into `llm/`, execute and freeze them, render HTML and PDF.

This is the embedded render path, used when Quarto is not installed. It reads
the same `_quarto.yml` and `.qmd` files as `quarto render`.
"""
