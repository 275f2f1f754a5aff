"""The real agent CLIs for the tests that drive them: installed by ``install.sh``, found by :func:`locate`."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ("INSTALL_SCRIPT", "RealCLIs", "locate", "missing_reason")

INSTALL_SCRIPT = Path(__file__).resolve().parent / "install.sh"


@dataclass(frozen=True)
class RealCLIs:
    """Where the pinned real CLIs are: ``bin_dir`` goes first on an agent's PATH, so the presets run them."""

    bin_dir: Path
    claude: Path
    codex: Path


def _pins() -> tuple[str, str]:
    text = INSTALL_SCRIPT.read_text()
    claude = re.search(r'CLAUDE_CODE_VERSION:-([^}"]+)', text)
    codex = re.search(r'CODEX_VERSION:-([^}"]+)', text)
    assert claude and codex, "install.sh must pin both versions"
    return os.environ.get("CLAUDE_CODE_VERSION", claude.group(1)), os.environ.get("CODEX_VERSION", codex.group(1))


def _prefix() -> Path:
    cache = Path(os.environ.get("MAESTRO_TEST_CACHE") or Path.home() / ".cache" / "maestro-parallel-tests")
    claude, codex = _pins()
    return cache / "npm" / f"claude-code-{claude}+codex-{codex}"


def missing_reason() -> str | None:
    """Why the real CLIs cannot be used, or None when they are installed."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node and npm are not on PATH: the real Claude Code and Codex CLIs cannot be installed"
    prefix = _prefix()
    if not (prefix / ".installed").is_file():
        return f"the real CLIs are not installed in {prefix}: run {INSTALL_SCRIPT}"
    return None


def locate() -> RealCLIs | None:
    """The installed CLIs, or None (see :func:`missing_reason`)."""
    if missing_reason() is not None:
        return None
    bin_dir = _prefix() / "node_modules" / ".bin"
    return RealCLIs(bin_dir, bin_dir / "claude", bin_dir / "codex")
