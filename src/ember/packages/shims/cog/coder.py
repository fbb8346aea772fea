"""`cog.coder`: Cog's registry of custom encoders/decoders for input and output types.

Models subclass `Coder` and call `Coder.register(...)` at import time; without this module
that import fails before the model even loads. Ember validates inputs and encodes outputs
with pydantic, so registered coders are kept and can be looked up, but Ember does not consult
them when serving.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar


class Coder:
    """Base class of a custom type's encoder/decoder, found by `Coder.lookup(type)`."""

    _coders: ClassVar[set[type[Coder]]] = set()

    @staticmethod
    def register(coder: type[Coder]) -> None:
        """Make `coder` available to `lookup`."""
        Coder._coders.add(coder)

    @staticmethod
    def lookup(tpe: Any) -> Coder | None:
        """The first registered coder whose `factory` accepts `tpe`, else None."""
        for cls in list(Coder._coders):
            coder = cls.factory(tpe)
            if coder is not None:
                return coder
        return None

    @staticmethod
    @abstractmethod
    def factory(tpe: Any) -> Coder | None:
        """An instance for `tpe` when this coder handles it, else None."""

    @abstractmethod
    def encode(self, value: Any) -> dict[str, Any]:
        """The JSON-ready form of `value`."""

    @abstractmethod
    def decode(self, value: dict[str, Any]) -> Any:
        """The Python value a JSON object stands for."""


__all__ = ["Coder"]
