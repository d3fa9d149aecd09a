"""The user's allowances of project manifests: which file, with exactly which content.

As with `direnv allow`: a project's claude-bottle.json is trusted only while
its path and the sha256 of its content match what the user allowed; any change
makes it untrusted again. Kept in a private file in the user's state folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import lazy

hashlib = lazy.Module("hashlib")


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class Store:
    """The allowances in `folder`/trusted.json: {path: sha256 of the allowed content}. The path is the file's as
    found, not where a link leads: a repository that links its manifest to one you allowed elsewhere has
    its own folder (and skills), so it is not allowed by that."""

    def __init__(self, folder: Path):
        self.file = folder / "trusted.json"

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.file.read_text())
        except (OSError, ValueError):
            return {}
        allowed = data.get("allowed") if isinstance(data, dict) else None
        return {k: v for k, v in allowed.items() if isinstance(v, str)} if isinstance(allowed, dict) else {}

    def _write(self, allowed: dict[str, str]) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Written whole and renamed into place, so a crash never leaves half an allowance list.
        import tempfile

        fd, tmp = tempfile.mkstemp(dir=self.file.parent, prefix=".trusted.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"version": 1, "allowed": allowed}, f, indent=2, sort_keys=True)
            os.replace(tmp, self.file)
        except BaseException:
            os.unlink(tmp)  # a trusted.json that is a folder, a full disk: nothing half-made stays
            raise

    def is_allowed(self, path: Path, content_digest: str) -> bool:
        return self._read().get(str(path.absolute())) == content_digest

    def allow(self, path: Path, content_digest: str) -> None:
        allowed = self._read()
        allowed[str(path.absolute())] = content_digest
        self._write(allowed)

    def revoke(self, path: Path) -> bool:
        """Forget the allowance of `path`; False if there was none."""
        allowed = self._read()
        if allowed.pop(str(path.absolute()), None) is None:
            return False
        self._write(allowed)
        return True
