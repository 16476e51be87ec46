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
