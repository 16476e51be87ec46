"""``Name(arg=value, ...)`` reprs for the small configurable classes (operators, regularizers, schedules)."""


class ArgumentsRepr:
    """A ``__repr__`` that lists the instance's public attributes: ``BoxInpainting(size=[12, 12], ...)``."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"
