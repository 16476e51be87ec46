"""Errors that dwgf reports to the user as one line, without a traceback. A leaf: imports nothing from dwgf."""

from __future__ import annotations


class DWGFError(Exception):
    """A problem the user can fix (bad option, bad file, missing model).

    The message is a single line that names the option or file and says what was expected. The
    ``dwgf`` command prints it as ``dwgf: error: <message>`` and exits with status 2.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class DWGFWarning(UserWarning):
    """Something the user should know that does not stop the run; ``dwgf`` prints it as one line."""


def _about(kind: type, owner: object, argument: str, detail: str, also: tuple[str, ...]) -> Exception:
    name = owner if isinstance(owner, str) else type(owner).__name__
    text = detail
    for other in also:
        text = text.replace(f"<{other}>", other)
    obj = kind(f"{name}: {argument}{text}")
    obj.owner, obj.argument, obj.detail, obj.also = name, argument, detail, tuple(also)
    return obj


def argument_error(owner: object, argument: str, detail: str, also: tuple[str, ...] = ()) -> DWGFError:
    """A :class:`DWGFError` about one argument of a class, worded for the Python API.

    The message is ``"<Class>: <argument><detail>"`` (``"DWGF: num_steps must be >= 1, got 0"``); the
    ``dwgf`` command, which knows where the class sits in the config, names the option instead
    (``"--model.num_steps must be >= 1, got 0"``). ``owner`` is the instance or its class name.
    Other arguments of the same class that ``detail`` mentions are written ``<name>`` and listed in
    ``also``: the Python API shows them as ``name``, the command as their option (``--data.name``).
    """
    return _about(DWGFError, owner, argument, detail, also)  # type: ignore[return-value]


def argument_warning(owner: object, argument: str, detail: str, also: tuple[str, ...] = ()) -> DWGFWarning:
    """A :class:`DWGFWarning` about one argument of a class, worded like :func:`argument_error`."""
    return _about(DWGFWarning, owner, argument, detail, also)  # type: ignore[return-value]
