#!/usr/bin/env python3
"""The demo's agent: does what its task says, slowly enough to watch.

It reads the prompt the coordinator wrote (argv[2]), finds the files listed
under "## Relevant files", and writes each one with content that fits its kind
and names the task, so the test suite (check_work.py) can verify the work.
"""

import os
import sys
import time
from pathlib import Path

CONTENT = {
    ".py": 'TASK_ID = "{task}"\n\n\ndef handler() -> dict:\n    """{title}."""\n    return {{"ok": True, "task": TASK_ID}}\n',
    ".sql": "-- {task}: {title}\nCREATE TABLE users (\n    id INTEGER PRIMARY KEY,\n    email TEXT NOT NULL UNIQUE\n);\n",
    ".tsx": '// {task}: {title}\nexport function LoginForm() {{\n  return <form aria-label="login" />;\n}}\n',
    ".css": "/* {task}: {title} */\nform[aria-label='login'] {{ display: grid; gap: 0.5rem; }}\n",
    ".md": "<!-- {task} -->\n# {title}\n\n- `GET /health` returns `{{\"ok\": true}}`.\n- `GET /version` returns the server version.\n",
}


def main() -> int:
    task_id, prompt_file = sys.argv[1], Path(sys.argv[2])
    prompt = prompt_file.read_text()
    title = next((line.split(":", 1)[1].strip() for line in prompt.splitlines() if line.startswith("## Task ")), task_id)
    files = []
    if "## Relevant files" in prompt:
        section = prompt.split("## Relevant files", 1)[1]
        files = [line[2:].strip() for line in section.splitlines() if line.startswith("- ")]
    subagent = os.environ.get("MAESTRO_SUBAGENT", "?")
    print(f"{task_id}: working as {subagent} on {len(files)} file(s)", flush=True)
    time.sleep(float(os.environ.get("DEMO_AGENT_SECONDS", "1.5")))
    for name in files:
        path = Path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        template = CONTENT.get(path.suffix, "{task}: {title}\n")
        path.write_text(template.format(task=task_id, title=title))
        print(f"{task_id}: wrote {name}", flush=True)
    return 0 if files else 1


if __name__ == "__main__":
    sys.exit(main())
