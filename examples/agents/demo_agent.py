"""The demo's stand-in coding agent.

Real agents (Ollama models, Claude Code, Codex, aider) plug in through their adapters; this script lets
the demo and the tests run offline and deterministically. Each example ticket carries a recipe in an
HTML comment (`<!-- demo-agent ... -->`, YAML) that says which edits to make:

  ask: <question>        block with this question until a human gives guidance
  first_try: [edits]     what iteration 1 does (a deliberately wrong first attempt: shows the fix loop)
  steps: [edits]         what the agent does otherwise
An edit is {describe, file, append | write | replace: {old, new}}. Every edit is one step, announced
with `::ticketflow step::`, and steps an earlier attempt already completed are skipped.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import yaml

RECIPE = re.compile(r"<!--\s*demo-agent\s*\n(.*?)-->", re.DOTALL)


def apply(edit: dict[str, object], root: Path) -> None:
    """Apply one edit; applying it twice changes nothing (a resumed attempt may repeat a step)."""
    path = root / str(edit["file"])
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else ""
    if "write" in edit:
        path.write_text(str(edit["write"]))
    elif "append" in edit:
        if not text.endswith(str(edit["append"])):
            path.write_text(text + str(edit["append"]))
    elif "replace" in edit:
        spec = edit["replace"]
        assert isinstance(spec, dict)
        old, new = str(spec["old"]), str(spec["new"])
        if old in text:
            path.write_text(text.replace(old, new, 1))
        elif new not in text:
            raise SystemExit(f"demo agent: {path.name} does not contain the text to replace")


def main() -> int:
    task = json.loads(Path(os.environ["TICKETFLOW_TASK_FILE"]).read_text())
    found = RECIPE.search(task["ticket"]["body"])
    if not found:
        print("::ticketflow blocked::this ticket has no demo-agent recipe; the demo agent cannot work on it")
        return 0
    recipe = yaml.safe_load(found.group(1)) or {}
    if recipe.get("ask") and not task.get("guidance"):
        print(f"::ticketflow blocked::{recipe['ask']}")
        return 0
    if task.get("guidance"):
        print(f"using guidance: {task['guidance']}")
    first_try = recipe.get("first_try") if task["iteration"] == 1 else None
    edits: list[dict[str, object]] = first_try or recipe["steps"]
    done = int(os.environ.get("TICKETFLOW_RESUME_STEP", "0"))
    delay = float(recipe.get("step_seconds", os.environ.get("DEMO_AGENT_STEP_SECONDS", "0")))
    root = Path(os.environ["TICKETFLOW_WORKTREE"])
    for number, edit in enumerate(edits, start=1):
        if number <= done:
            print(f"step {number} already done by an earlier attempt; skipping")
            continue
        print(f"working on step {number}: {edit.get('describe', edit['file'])}", flush=True)
        time.sleep(delay)
        apply(edit, root)
        print(f"::ticketflow step::{edit.get('describe', edit['file'])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
