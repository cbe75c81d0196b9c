"""The module map of docs/architecture.md, made from each module's own first sentence.

    python scripts/module_map.py           print the map
    python scripts/module_map.py --write   replace the map in docs/architecture.md (between its markers)

tests/test_layout.py fails when the map in the docs is not what this prints, so a module added without a docstring,
or a docstring changed without the docs, shows at once.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "qwen_stream"
DOC = ROOT / "docs" / "architecture.md"
START = "<!-- module map: made by scripts/module_map.py from each module's first sentence -->"
END = "<!-- end of the module map -->"


def first_sentence(path: Path) -> str:
    """The docstring's first sentence (up to its first full stop followed by a space, or its first paragraph)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    if not doc:
        raise ValueError(f"{path.relative_to(ROOT)} has no docstring: say the module's job in its first line")
    paragraph = " ".join(doc.split("\n\n")[0].split())
    match = re.match(r"(.+?\.)(\s|$)", paragraph)
    return (match.group(1) if match else paragraph).rstrip(".")


def modules() -> list[Path]:
    """Every module and package of qwen_stream, packages before their modules, in path order."""
    return sorted(PACKAGE.rglob("*.py"), key=lambda p: (p.parent.relative_to(PACKAGE).parts, p.name != "__init__.py",
                                                        p.name))


def module_map() -> str:
    rows = ["| module | its job |", "|---|---|"]
    for path in modules():
        relative = path.relative_to(PACKAGE)
        folder = relative.parent.as_posix()
        name = (f"{folder}/" if folder != "." else "qwen_stream/") if path.name == "__init__.py" else relative.as_posix()
        job = first_sentence(path).replace("|", r"\|")
        rows.append(f"| `{name}` | {job} |")
    return "\n".join([START, *rows, END])


def current_map(doc: str) -> str | None:
    if START not in doc or END not in doc:
        return None
    return doc[doc.index(START):doc.index(END) + len(END)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the map in docs/architecture.md")
    args = parser.parse_args()
    made = module_map()
    if not args.write:
        print(made)
        return 0
    doc = DOC.read_text(encoding="utf-8")
    old = current_map(doc)
    DOC.write_text(doc.replace(old, made) if old is not None else f"{doc.rstrip()}\n\n{made}\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
