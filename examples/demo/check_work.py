"""The demo's test suite: every task of the group just run must have written its files, and they must parse."""

import ast
import json
import os
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parent
group = os.environ.get("MAESTRO_GROUP_ID", "")
tasks = json.loads((root / "tasks.json").read_text())["tasks"]
problems = []
checked = 0
for task in tasks:
    marker = re.match(r"\s*\[P:Group-([\w-]+)\]", task["description"])
    if (marker.group(1) if marker else "_sequential") != group or task.get("status") == "closed":
        continue
    for name in re.findall(r"[\w/]+\.(?:py|sql|tsx|css|md)\b", task["description"]):
        path = root / name
        checked += 1
        if not path.is_file():
            problems.append(f"{task['id']}: {name} was not written")
            continue
        text = path.read_text()
        if task["id"] not in text:
            problems.append(f"{task['id']}: {name} does not name its task")
        if path.suffix == ".py":
            try:
                ast.parse(text)
            except SyntaxError as exc:
                problems.append(f"{task['id']}: {name} is not valid Python: {exc}")
for problem in problems:
    print("FAIL", problem)
print(f"checked {checked} file(s) of group {group!r}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
sys.exit(1 if problems or not checked else 0)
