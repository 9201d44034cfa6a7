#!/usr/bin/env python3
"""Replays a real CLI's recorded output (tests/agents/recorded/): prints $REPLAY_FILE line by line and exits
with $REPLAY_EXIT, so an adapter reads exactly what the real CLI printed. Only the standard library."""

from __future__ import annotations

import os
import sys
from pathlib import Path

for line in Path(os.environ["REPLAY_FILE"]).read_text().splitlines():
    print(line, flush=True)
sys.exit(int(os.environ.get("REPLAY_EXIT", "0")))
