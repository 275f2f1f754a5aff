#!/usr/bin/env bash
# Install the pinned real agent CLIs (Claude Code, Codex) for the tests that drive them.
#
# They go into ${MAESTRO_TEST_CACHE:-$HOME/.cache/maestro-parallel-tests}/npm, one folder per pinned set of
# versions, so a second run is a no-op that takes milliseconds. Without node/npm it says so and exits 0: the tests
# skip (outside CI) with the same reason.
set -euo pipefail

CLAUDE_CODE_VERSION="${CLAUDE_CODE_VERSION:-2.1.332}"
CODEX_VERSION="${CODEX_VERSION:-0.171.0}"

cache="${MAESTRO_TEST_CACHE:-$HOME/.cache/maestro-parallel-tests}/npm"
prefix="$cache/claude-code-$CLAUDE_CODE_VERSION+codex-$CODEX_VERSION"
stamp="$prefix/.installed"

if [[ -f "$stamp" ]]; then
    exit 0
fi
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "install.sh: node and npm are not on PATH; the real-CLI tests will skip" >&2
    exit 0
fi

mkdir -p "$prefix"
printf '{"name": "maestro-realcli", "private": true}\n' > "$prefix/package.json"
npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
    "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" "@openai/codex@$CODEX_VERSION" >&2
"$prefix/node_modules/.bin/claude" --version >/dev/null
"$prefix/node_modules/.bin/codex" --version >/dev/null
printf 'claude-code %s\ncodex %s\n' "$CLAUDE_CODE_VERSION" "$CODEX_VERSION" > "$stamp"
