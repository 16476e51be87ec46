"""Errors that dwgf reports to the user as one line, without a traceback."""


class DWGFError(Exception):
    """A problem the user can fix (bad option, bad file, missing model).

    The message is a single line that names the option or file and says what was expected. The
    ``dwgf`` command prints it as ``dwgf: error: <message>`` and exits with status 2.
    """

    last: "DWGFError | None" = None  # the most recent one, to recover it from wrapping errors

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
        DWGFError.last = self


def find_dwgf_error(err: BaseException) -> "DWGFError | None":
    """The :class:`DWGFError` behind ``err``: itself, one in its cause/context chain, or the last one
    raised whose message ``err`` quotes (jsonargparse re-raises errors from nested classes as
    ``ValueError`` with their messages inside)."""
    seen = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        if isinstance(e, DWGFError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    last = DWGFError.last
    if last is not None and str(last) and str(last) in str(err):
        return last
    return None
