"""Named, reversible replacements of aiortc attributes (the adapter's only tool).

A ``Patch`` names its target (a module or class and an attribute), checks
that the attribute exists before replacing it (an aiortc release that
renamed it fails loudly here instead of recording nothing), and can be
undone.  Applying twice is a no-op.
"""

from __future__ import annotations

from typing import Any, Callable


class AdapterError(RuntimeError):
    """aiortc lacks something the adapter relies on (an unsupported release)."""


class Patch:
    """Replace ``owner.name`` with ``make(original)``; :meth:`revert` puts it back."""

    def __init__(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        self.owner = owner
        self.name = name
        self._make = make
        self.original: Any = None
        self.replacement: Any = None

    @property
    def applied(self) -> bool:
        return self.replacement is not None and getattr(self.owner, self.name, None) is self.replacement

    def apply(self) -> None:
        if self.applied:
            return
        if not hasattr(self.owner, self.name):
            owner = getattr(self.owner, "__name__", repr(self.owner))
            raise AdapterError(f"aiortc has no {owner}.{self.name}: this aiortc release is not supported")
        self.original = getattr(self.owner, self.name)
        self.replacement = self._make(self.original)
        setattr(self.owner, self.name, self.replacement)

    def revert(self) -> None:
        if self.applied:
            setattr(self.owner, self.name, self.original)
        self.replacement = None


def private(obj: Any, cls_name: str, attr: str) -> Any:
    """Read a name-mangled private attribute (``obj._Cls__attr``), failing loudly."""
    mangled = f"_{cls_name}__{attr}"
    if not hasattr(obj, mangled):
        raise AdapterError(f"aiortc {cls_name} has no private {attr}: this aiortc release is not supported")
    return getattr(obj, mangled)
