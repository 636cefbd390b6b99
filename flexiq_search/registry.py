"""One registry shape for every pluggable family (models aside): observers, selection strategies,
latency backends, ratio controllers. timm-style: `@REGISTRY.register("name")` on a class records it
and sets its `name`; `create` builds one by name or fails with one line that lists the known names."""

from __future__ import annotations

from typing import Callable

from .errors import FlexiqError


class Registry(dict):
    """Name -> factory, with one-line errors for unknown names (`error`: the exception type)."""

    def __init__(self, kind: str, error: type[Exception] = FlexiqError) -> None:
        super().__init__()
        self.kind, self.error = kind, error

    def register(self, name: str) -> Callable:
        def wrap(cls):
            cls.name = name
            self[name] = cls
            return cls

        return wrap

    def names(self) -> list[str]:
        return sorted(self)

    def create(self, name: str, **kwargs):
        if name not in self:
            raise self.error(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self[name](**kwargs)
