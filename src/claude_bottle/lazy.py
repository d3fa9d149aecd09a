"""Modules imported when first used, not when the importing module loads.

Each command pays for every import at start-up, and `exec`, `stop` or `ps` use a fraction of what
`start` needs (tar files, temporary folders, hashes, most of this package). A name bound to
Module("tarfile") imports tarfile on its first attribute access; importlib's LazyLoader would do the
same but costs more to import and to set up than the modules it defers."""

from __future__ import annotations

import importlib


class Module:
    def __init__(self, name: str):
        self.__dict__["_name"] = name

    def __getattr__(self, attr: str):
        # Looked up in the module every time (never copied here), so that what rebinds a name there (a
        # test's mock.patch) is seen through this name too.
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name}>"
