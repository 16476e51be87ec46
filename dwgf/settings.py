"""A method's settings: one frozen dataclass holds each setting, its default and its check.

A settings class (:class:`~dwgf.flow.FlowConfig`, :class:`~dwgf.methods.SMCConfig`, ...) subclasses
:class:`Settings`. Its fields are the settings, with their defaults; their types are checked when an instance is
made (a number, a whole number, true or false, an instance of a class, a tuple of them), then its :meth:`~Settings.check`
checks ranges and relations. Every error is one line naming the setting, ``"SMCConfig: guidance must be a number,
got 'abc'"``; a solver that maps its options onto the settings (:meth:`Settings.of`) words it as its own option, and
the ``dwgf`` command as the command-line option (``--model.settings.guidance ...`` or ``--model.num_steps ...``).
Nothing else writes a setting's default or check: the solver classes read them from here.

    >>> from dwgf.methods import SMCConfig
    >>> SMCConfig(guidance=0.5).num_steps
    200
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, Callable, Optional

from dwgf.errors import DWGFError, argument_error


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Base of the methods' settings dataclasses: checks each field's type, then :meth:`check`."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            object.__setattr__(self, f.name, _checked(self, f.name, getattr(self, f.name), hints.get(f.name, Any)))
        self.check()

    def check(self) -> None:
        """Ranges and relations between settings; raises :meth:`error`. A subclass calls ``super().check()``."""

    def check_prior(self, prior: Any) -> None:
        """Checks that need the prior (e.g. no more steps than its training timesteps); raises :meth:`error`."""

    def check_operator(self, operator: Any) -> None:
        """Checks that need the forward operator (e.g. PSLD's adjoint); raises :class:`~dwgf.errors.DWGFError`."""

    def type_hint(self, name: str, value: Any) -> str:
        """More words for a value of the wrong type given to setting ``name`` (e.g. where it belongs instead)."""
        return ""

    def error(self, name: str, detail: str) -> DWGFError:
        """The one-line error about setting ``name``: ``"<Class>: <name><detail>"`` (``detail`` starts with a space or a colon)."""
        return argument_error(type(self).__name__, name, detail)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def as_dict(self) -> dict[str, Any]:
        """The settings as keywords (not copied: the values are the instance's own)."""
        return {name: getattr(self, name) for name in self.names()}

    @classmethod
    def of(cls, owner: object, values: dict[str, Any], option: Callable[[str], str] = lambda name: name,
           prior: Any = None) -> "Settings":
        """``cls(**values)`` (and :meth:`check_prior` when ``prior`` is given) for a solver ``owner`` whose option
        ``option(name)`` sets setting ``name``: an error about a setting becomes one about that option of ``owner``
        (:func:`~dwgf.errors.argument_error`), which the ``dwgf`` command names as its command-line option."""
        try:
            settings = cls(**values)
            if prior is not None:
                settings.check_prior(prior)
            return settings
        except DWGFError as err:
            name = getattr(err, "argument", None)
            if getattr(err, "owner", None) == cls.__name__ and name in cls.names():
                raise argument_error(owner, option(name), err.detail) from None
            raise


def _type_name(hint: Any) -> str:
    if hint is bool:
        return "true or false"
    if hint is int:
        return "a whole number"
    if hint is float:
        return "a number"
    return f"a {getattr(hint, '__name__', str(hint))}"


def _checked(owner: Settings, name: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the annotation ``hint`` (floats as float, sequences as tuples); raises ``owner.error``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for i, option in enumerate(options):
            try:
                return _checked(owner, name, value, option)
            except DWGFError:
                if i + 1 == len(options):
                    raise
        return value
    if origin is typing.Literal:
        if value not in args:
            raise owner.error(name, f" must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise owner.error(name, f" must be a list, got {_given(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_checked(owner, name, v, args[0]) for v in value)
        if len(value) != len(args):
            raise owner.error(name, f" must be {len(args)} values, got {len(value)}")
        return tuple(_checked(owner, name, v, a) for v, a in zip(value, args))
    if hint is bool:
        if not isinstance(value, bool):
            raise owner.error(name, f" must be true or false, got {_given(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise owner.error(name, f" must be a whole number, got {_given(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise owner.error(name, f" must be a number, got {_given(value)}")
        if not math.isfinite(value):
            raise owner.error(name, f" must be a finite number, got {value}")
        return float(value)
    if isinstance(hint, type):
        if not isinstance(value, hint):
            raise owner.error(name, f" must be {_type_name(hint)} ({hint.__module__}), got {_given(value)}{owner.type_hint(name, value)}")
        return value
    return value


def _given(value: Any) -> str:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return repr(value)
    return f"a {type(value).__name__}"


def positive(settings: Settings, *names: str) -> None:
    """Each of ``names`` must be >= 1 (step counts)."""
    for name in names:
        if getattr(settings, name) < 1:
            raise settings.error(name, f" must be >= 1, got {getattr(settings, name)}")


def at_least_zero(settings: Settings, *names: str) -> None:
    for name in names:
        if not getattr(settings, name) >= 0:
            raise settings.error(name, f" must be >= 0, got {getattr(settings, name)}")


def within(settings: Settings, name: str, low: float, high: float, *, open_low: bool = False) -> None:
    value = getattr(settings, name)
    if not (low < value <= high if open_low else low <= value <= high):
        raise settings.error(name, f" must be in {'(' if open_low else '['}{low:g}, {high:g}], got {value}")


def check_ddim_steps(settings: Settings, prior: Any, name: str = "num_steps") -> None:
    """A DDIM/DDPM chain of ``name`` steps needs at most the prior's training timesteps."""
    limit: Optional[int] = getattr(prior, "num_train_timesteps", None)
    if limit is not None and getattr(settings, name) > limit:
        raise settings.error(name, f" must be <= the prior's {limit} timesteps, got {getattr(settings, name)}")
