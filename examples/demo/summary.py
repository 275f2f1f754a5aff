"""The demo's context refresh: a short summary of the project's state (stands in for /flow:summary)."""

from pathlib import Path

root = Path(__file__).resolve().parent
files = sorted(p.relative_to(root).as_posix() for d in ("src", "web", "migrations", "docs") for p in (root / d).rglob("*") if p.is_file())
print("Project: demo service with an API, a database and a web front end.")
print("Files so far: " + (", ".join(files) if files else "none yet"))
