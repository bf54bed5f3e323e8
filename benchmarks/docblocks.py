"""Regenerate the tables of a doc page from the benchmark that prints them.

A page marks each generated block with HTML comments (invisible when rendered):

    <!-- begin: hels_tables -->
    ```
    ...what the script printed...
    ```
    <!-- end: hels_tables -->

``write_block(page, name, text)`` replaces what lies between the markers with ``text`` in a
fenced block (``fenced=False``: as it is, e.g. Markdown tables); a benchmark run with ``--doc``
(or ``--write``) calls it, so the page always shows the output of the current code. A missing
marker is an error naming the page and the block.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def write_block(page: str, name: str, text: str, fenced: bool = True) -> None:
    path = DOCS / page
    doc = path.read_text()
    pattern = re.compile(rf"(<!-- begin: {re.escape(name)} -->\n).*?(<!-- end: "
                         rf"{re.escape(name)} -->)", re.S)
    if not pattern.search(doc):
        raise SystemExit(f"{path}: no '<!-- begin: {name} -->' ... '<!-- end: {name} -->' "
                         "block to regenerate")
    body = text.rstrip("\n") + "\n"
    if fenced:
        body = "```\n" + body + "```\n"
    path.write_text(pattern.sub(lambda m: m.group(1) + body + m.group(2), doc, count=1))
    print(f"(wrote block {name!r} of {path.relative_to(ROOT)})")


def md_table(df, float_format: str = "{:g}") -> str:
    """A frame's columns as a Markdown table (no tabulate dependency), floats by
    ``float_format``."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(float_format.format(v) if isinstance(v, float) else str(v)
                                        for v in row) + " |")
    return "\n".join(lines)


def section(text: list, title: str, df) -> None:
    """Append a ``### title`` section holding ``df`` as a Markdown table to ``text`` (a page's
    generated block), and print the table under ``== title``."""
    text.append(f"### {title}\n\n{md_table(df)}\n")
    print(f"\n== {title}\n{df.to_string(index=False)}")


def run_main(body, page: str, default_block: str, argv=None):
    """Run ``body(args_rest)`` capturing what it prints; print it, and with ``--doc [NAME]``
    also write it into block NAME (default ``default_block``) of ``docs/<page>``."""
    import contextlib
    import io
    import sys
    args = list(sys.argv[1:] if argv is None else argv)
    block = None
    if "--doc" in args:
        k = args.index("--doc")
        nxt = args[k + 1] if k + 1 < len(args) and not args[k + 1].startswith("--") else None
        block = nxt or default_block
        del args[k:k + (2 if nxt else 1)]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            body(args)
    finally:              # (--help exits inside body: its text was captured, show it)
        text = out.getvalue()
        print(text, end="")
        if {"-h", "--help"} & set(args):
            print(f"\n--doc [BLOCK]: also write the output into docs/{page}, block BLOCK "
                  f"(default {default_block})")
    if block:
        write_block(page, block, text)
