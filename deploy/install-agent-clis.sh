#!/usr/bin/env bash
# Installs the agent CLIs ticketflow is tested with, at the tested versions, into one directory:
#   <prefix>/node/node_modules/.bin/{claude,codex,gemini}   (npm, a project-local prefix)
#   <prefix>/aider-venv/bin/aider                            (PyPI, a venv of its own: aider pins many packages)
#   <prefix>/bin/{claude,codex,gemini,aider}                 (launchers: put this directory on PATH, or point
#                                                             [agents.X] binary at one of them)
#
#   deploy/install-agent-clis.sh [--prefix DIR] [claude] [codex] [gemini] [aider]
#
# Default prefix: .ci/agent-clis in the repository (what CI and the real_cli tests use); for a worker,
# e.g. --prefix /opt/ticketflow-agents (outside any home directory: the sandbox hides homes).
# Needs Node 20+ with npm for the first three and Python 3.10-3.12 for aider. Without names: all four.
# Re-running is cheap: a CLI already at its pinned version is left alone.
set -euo pipefail

CLAUDE_CODE_VERSION=2.1.197
CODEX_VERSION=0.171.0
GEMINI_CLI_VERSION=0.61.0
AIDER_VERSION=0.86.2

here="$(cd "$(dirname "$0")/.." && pwd)"
prefix="$here/.ci/agent-clis"
wanted=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --prefix=*) prefix="${1#--prefix=}"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    claude|codex|gemini|aider) wanted+=("$1"); shift ;;
    *) echo "error: unknown argument $1 (claude, codex, gemini, aider, --prefix DIR)" >&2; exit 2 ;;
  esac
done
[ ${#wanted[@]} -gt 0 ] || wanted=(claude codex gemini aider)
mkdir -p "$prefix/bin"
prefix="$(cd "$prefix" && pwd)"

launcher() {  # <prefix>/bin/<name>: a small script that execs the real program (a file, not a symlink)
  local target
  target="$(readlink -f "$2")"
  printf '#!/bin/sh\nexec %s "$@"\n' "'$target'" > "$prefix/bin/$1.tmp"
  chmod 755 "$prefix/bin/$1.tmp"
  mv -f "$prefix/bin/$1.tmp" "$prefix/bin/$1"
}

npm_package() {
  case "$1" in
    claude) echo "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" ;;
    codex) echo "@openai/codex@$CODEX_VERSION" ;;
    gemini) echo "@google/gemini-cli@$GEMINI_CLI_VERSION" ;;
  esac
}

installed_npm_version() {  # the version of an npm package under the prefix, or nothing
  local manifest="$prefix/node/node_modules/$1/package.json"
  [ -f "$manifest" ] && sed -n 's/^  "version": "\(.*\)",$/\1/p' "$manifest" | head -1
}

npm_wanted=()
for cli in "${wanted[@]}"; do
  [ "$cli" = aider ] && continue
  spec="$(npm_package "$cli")"
  name="${spec%@*}"
  if [ "$(installed_npm_version "$name")" != "${spec##*@}" ]; then
    npm_wanted+=("$spec")
  fi
done
if [ ${#npm_wanted[@]} -gt 0 ]; then
  command -v npm >/dev/null || { echo "error: npm (Node 20+) is needed for ${npm_wanted[*]}" >&2; exit 1; }
  echo "installing ${npm_wanted[*]} into $prefix/node"
  npm install --prefix "$prefix/node" --no-audit --no-fund --loglevel=error --save-exact "${npm_wanted[@]}"
fi
for cli in "${wanted[@]}"; do
  [ "$cli" = aider ] && continue
  launcher "$cli" "$prefix/node/node_modules/.bin/$cli"
done

if printf '%s\n' "${wanted[@]}" | grep -qx aider; then
  venv="$prefix/aider-venv"
  if [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("aider-chat"))' 2>/dev/null)" \
      != "$AIDER_VERSION" ]; then
    python="${AIDER_PYTHON:-python3}"
    echo "installing aider-chat==$AIDER_VERSION into $venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "aider-chat==$AIDER_VERSION"
  fi
  launcher aider "$venv/bin/aider"
fi

for cli in "${wanted[@]}"; do
  printf '%-7s %s\n' "$cli" "$("$prefix/bin/$cli" --version 2>&1 | head -1)"
done
