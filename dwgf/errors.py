"""Errors that dwgf reports to the user as one line, without a traceback. A leaf: imports nothing from dwgf."""


class DWGFError(Exception):
    """A problem the user can fix (bad option, bad file, missing model).

    The message is a single line that names the option or file and says what was expected. The
    ``dwgf`` command prints it as ``dwgf: error: <message>`` and exits with status 2.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class DWGFWarning(UserWarning):
    """Something the user should know that does not stop the run; ``dwgf`` prints it as one line."""


def argument_error(owner: object, argument: str, detail: str) -> DWGFError:
    """A :class:`DWGFError` about one argument of a class, worded for the Python API.

    The message is ``"<Class>: <argument><detail>"`` (``"DWGF: num_steps must be >= 1, got 0"``); the
    ``dwgf`` command, which knows where the class sits in the config, names the option instead
    (``"--model.num_steps must be >= 1, got 0"``). ``owner`` is the instance or its class name.
    """
    name = owner if isinstance(owner, str) else type(owner).__name__
    err = DWGFError(f"{name}: {argument}{detail}")
    err.owner, err.argument, err.detail = name, argument, detail
    return err
