"""The command line's knowledge of dwgf: the built-in classes by short name, and parser errors as one line.

Only :mod:`dwgf.cli` imports this module (it imports every subpackage, to list the built-ins). No Lightning here:
what the CLI knows of Lightning (the trainer's precisions, the data module base) it passes in.
"""

from __future__ import annotations


from typing import Any

from dwgf.errors import DWGFError


def find_dwgf_error(err: BaseException) -> "DWGFError | None":
    """The :class:`DWGFError` behind ``err``: itself, or one in its chain of causes and contexts
    (jsonargparse and Lightning re-raise errors of the classes they build with ``from``)."""
    seen = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        if isinstance(e, DWGFError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def builtin_classes() -> dict[str, str]:
    """Short name -> full class path of the built-in classes that configs may name."""
    import inspect

    import dwgf.baselines
    import dwgf.data
    import dwgf.likelihoods
    import dwgf.operators
    import dwgf.optimizers
    import dwgf.priors
    import dwgf.regularizers
    import dwgf.schedules
    import dwgf.solver

    found = {}
    for module in (dwgf.solver, dwgf.baselines, dwgf.priors, dwgf.operators, dwgf.regularizers, dwgf.likelihoods,
                   dwgf.optimizers, dwgf.schedules, dwgf.data):
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and obj.__module__.startswith("dwgf.") and not name.startswith("_"):
                found.setdefault(name, f"{obj.__module__}.{name}")
    return found


def _suggest(word: str, candidates) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _init_params(class_path: str) -> list[str]:
    import importlib
    import inspect

    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    except Exception:  # noqa: BLE001 - only for a suggestion
        return []


def _missing_class(path: str) -> str:
    """Why ``module.Class`` does not import: no such module, or no such class in it (with the closest name)."""
    import importlib
    import inspect

    module, _, name = path.rpartition(".")
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        hint = ""
        if isinstance(err, ModuleNotFoundError) and err.name == module.split(".")[0]:
            hint = (f"; a module of your own is found in the working directory or on PYTHONPATH: run dwgf where {module.split('.')[0]}.py "
                    "is, or PYTHONPATH=<its folder> dwgf ...")
        return f"cannot import module '{module}' for class_path '{path}' ({err}){hint}"
    except Exception as err:  # noqa: BLE001 - the user's module failed while importing
        return f"importing module '{module}' for class_path '{path}' failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    classes = [n for n, obj in vars(mod).items() if inspect.isclass(obj) and not n.startswith("_")]
    return f"no class '{name}' in module '{module}'{_suggest(name, classes)}"


_GENERIC = ("Does not validate against", "Subtypes:", "Errors:", "Given value", "Expected a <class 'NoneType'>", "Parser "
    "key", "Problem with given class_path")


def summarize_parser_error(message: str, options=(), precisions=()) -> str:
    """One line from a (multi-line) jsonargparse error: the option, what is wrong, and a suggestion.

    Args:
        message: the parser's error message.
        options: the command's option strings, to suggest the closest to an unrecognised one.
        precisions: the values ``--trainer.precision`` accepts, to list them.
    """
    import re

    keys = re.findall(r'Parser key "([^"]+)"', message)
    option = "--" + ".".join(keys) if keys else None
    bad_option = re.search(r"Option '([^']+)' is not accepted", message)
    if bad_option:
        opt = bad_option.group(1)
        class_paths = re.findall(r"Problem with given class_path '([^']+)'", message[: bad_option.start()])
        owner = class_paths[-1] if class_paths else None
        params = _init_params(owner) if owner else []
        where = f"{option}.{opt}" if option else f"--{opt}"
        what = f"{owner.rsplit('.', 1)[-1]} has no option '{opt}'" if owner else f"no option '{opt}'"
        return f"{where}: {what}{_suggest(opt, params)}" + (f"; its options: {', '.join(params)}" if params else "")
    bad_class = re.search(r"Expected a dot import path string: (\S+)", message) or re.search(r"Import path (\S+) does not", message)
    if bad_class:
        name = bad_class.group(1).strip("'\"")
        return (f"{option or 'a config value'}: unknown class '{name}'{_suggest(name, builtin_classes())}: give a built-in short "
                "name (dwgf predict --help lists them) or a full class_path such as my_module.MyClass")
    not_a_path = re.search(r"Expected a path but (\S+) either not accessible", message)
    if not_a_path and "." in not_a_path.group(1):
        return f"{option or 'a config value'}: {_missing_class(not_a_path.group(1))}"
    if option == "--trainer.precision" and "Expected a" in message:
        given = re.search(r"Given value type: <class '\w+'>, value: (\S+)|Got value: (\S+)", message)
        value = next((g for g in given.groups() if g), None) if given else None
        return f"--trainer.precision: expected one of {', '.join(map(str, precisions))}" + (f"; got {value}" if value else "")
    unrecognized = re.search(r"Unrecognized arguments: (.*)", message, re.IGNORECASE)
    if unrecognized:
        args = unrecognized.group(1).split()
        first = next((a for a in args if a.startswith("--")), args[0] if args else "")
        return f"unrecognized option {first}{_suggest(first.split('=')[0], options)}; dwgf predict --help lists the options"
    lines = [ln.strip(" -") for ln in message.splitlines() if ln.strip(" -")]
    useful = [ln for ln in lines if not ln.startswith(_GENERIC)]
    detail = useful[0] if useful else (lines[-1] if lines else "invalid arguments")
    return f"{option}: {detail}" if option else detail


def _find_owner(tree: Any, owner: str, path: tuple[str, ...] = ()) -> "tuple[str, ...] | None":
    """The config path (``init_args`` levels left out) of the first class named ``owner`` in ``tree``."""
    if isinstance(tree, dict):
        class_path = tree.get("class_path")
        if isinstance(class_path, str) and class_path.rsplit(".", 1)[-1] == owner:
            return path
        for key, value in tree.items():
            found = _find_owner(value, owner, path if key == "init_args" else (*path, str(key)))
            if found is not None:
                return found
    elif isinstance(tree, list):
        for value in tree:
            found = _find_owner(value, owner, path)
            if found is not None:
                return found
    return None


# classes the command builds itself, whose arguments are top-level options (``--output``)
_TOP_LEVEL = {"PredictionWriter": (), "OutputFolder": (), "OutputLock": ()}


def option_text(obj: BaseException, config: dict) -> "str | None":
    """The message of an argument error or warning (:func:`dwgf.errors.argument_error`) worded for the
    command line, naming options instead of arguments; ``None`` if ``obj`` is not about an argument
    of a class in ``config``."""
    owner, argument = getattr(obj, "owner", None), getattr(obj, "argument", None)
    if not owner or not argument:
        return None
    path = _TOP_LEVEL.get(owner)
    if path is None:
        path = _find_owner(config, owner)
    if path is None:
        return None
    detail = obj.detail
    for other in getattr(obj, "also", ()):
        detail = detail.replace(f"<{other}>", "--" + ".".join((*path, other)))
    return f"--{'.'.join((*path, argument))}{detail}"


def option_message(err: DWGFError, config: dict) -> DWGFError:
    """``err`` worded for the command line: an argument error of a class in ``config`` names its option
    (``DWGF: num_steps must ...`` -> ``--model.num_steps must ...``); any other error is returned as it is."""
    text = option_text(err, config)
    return err if text is None else DWGFError(text)
