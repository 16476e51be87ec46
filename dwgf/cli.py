"""The ``dwgf`` command: a LightningCLI with fit / validate / test / predict.

``dwgf predict --config C`` builds the solver (``model``), the data (``data``, which owns the
forward operator) and a Lightning ``Trainer``, then writes results under ``--output``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import yaml
from jsonargparse import Namespace

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import Callback, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

# Imported so that jsonargparse resolves the built-ins' short class names (``class_path: DWGF``).
import dwgf.data  # noqa: F401
import dwgf.operators  # noqa: F401
import dwgf.priors  # noqa: F401
import dwgf.regularizers  # noqa: F401
import dwgf.schedules  # noqa: F401
import dwgf.solver  # noqa: F401
from dwgf import stopping
from dwgf.errors import DWGFError, DWGFWarning
from dwgf.data.images import input_folder
from dwgf.calibration import CALIBRATE_USAGE, CALIBRATING, LAST_RUN
from dwgf.calibration import check_inputs as check_calibration_inputs
from dwgf.calibration import command as calibrate_command
from dwgf.outputs import OutputGuard, OutputLock, Resume, fingerprint
from dwgf.progress import FlowProgressBar
from dwgf.registry import builtin_classes, find_dwgf_error, option_message, option_text, summarize_parser_error
from dwgf.writers import PredictionWriter

_LOCKS: list[OutputLock] = []  # output folders locked by this call of main(), released when it returns
_GUARDS: list[OutputGuard] = []  # what this call of main() made in its output folder, taken back if the run is refused
_RUN_CONFIG: dict = {}  # the running command's config, for wording warnings about arguments as options


class DWGFCLI(LightningCLI):
    """LightningCLI with dwgf's defaults: seed 0, gradients on in predict, results in ``--output``."""

    writer: Optional[PredictionWriter] = None  # the predict run's writer, once the trainer is built

    def __init__(self, args: Any = None, run: bool = True):
        super().__init__(
            model_class=LightningModule,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_callback=None,
            trainer_defaults={"inference_mode": False, "logger": None, "enable_checkpointing": False},
            auto_configure_optimizers=False,
            # parser errors are raised (not printed with the usage) so that main() can make them one line
            parser_kwargs={
                "exit_on_error": False, "formatter_class": _HelpFormatter, "description": TOP_DESCRIPTION, "epilog": TOP_EPILOG,
                **{c: {"exit_on_error": False, "formatter_class": _HelpFormatter} for c in ("fit", "validate", "test", "predict")},
            },
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.epilog = builtins_help()
        parser.add_argument(
            "--output",
            type=Optional[str],
            default="outputs",
            help="Folder for the results: <output>/<name>/*.png, <output>/metrics.csv, <output>/config.yaml (predict); the trainer's "
                "default_root_dir (fit).",
        )
        parser.add_argument(
            "--overwrite",
            type=bool,
            default=False,
            help="predict: recompute every item. By default a run into an --output that holds complete items of the same configuration "
                "skips them (resume).",
        )

    def _sub(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        config = self._sub()
        _RUN_CONFIG.clear()
        _RUN_CONFIG.update(config.as_dict() if hasattr(config, "as_dict") else dict(config))
        data = config.get("data")
        init_args = data.get("init_args") if data is not None and hasattr(data, "get") else None
        if init_args is not None and "seed" in init_args and init_args.get("seed") is None:
            init_args["seed"] = int(config["seed_everything"] or 0)
        if self.subcommand == "predict":
            self._check_calibration(config)  # before anything is written
            if CALIBRATING:
                check_calibration_inputs(init_args, CALIBRATING)
            config["trainer"]["inference_mode"] = False  # the flow needs autograd
            config["trainer"]["use_distributed_sampler"] = False  # the data module shards whole batches itself
            config["return_predictions"] = False  # results go to disk, not into memory
            if not config.get("output"):
                raise DWGFError("--output is required: the folder where results are written")
            output = Path(config["output"]).expanduser()
            # every check that needs no model comes before the output folder is touched
            _check_finite(config)
            _check_trainer(config["trainer"])
            _same_threads_in_every_process(config["trainer"])
            for key in ("images", "measurements", "masks"):
                folder = init_args.get(key) if init_args is not None else None
                if folder and input_folder(folder).resolve() == output.resolve():
                    raise DWGFError(f"--output {str(config['output'])!r} is also an input folder (--data.{key}); choose another --output")
            if init_args is not None:  # input folders are checked before any model is loaded
                from dwgf.data.images import IMAGE_SUFFIXES, list_images

                for key, suffixes in (("images", IMAGE_SUFFIXES), ("measurements", (*IMAGE_SUFFIXES, ".npy"))):
                    if init_args.get(key):
                        try:
                            list_images(init_args[key], key, suffixes, owner=str(data.get("class_path", "")).rsplit(".", 1)[-1])
                        except DWGFError as err:
                            raise option_message(err, config.as_dict()) from None
            if output.exists() and not output.is_dir():
                raise DWGFError(f"--output {str(output)!r}: a file, not a folder; choose a folder")
            if not _is_secondary_process():  # what a refused run made in the folder is taken back (main())
                _GUARDS.append(OutputGuard(output))
            try:
                output.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise DWGFError(f"--output {str(output)!r}: cannot create the folder ({err.strerror})") from None
            if not os.access(output, os.W_OK):
                raise DWGFError(f"--output {str(output)!r}: the folder is not writable")
            if not _is_secondary_process():  # lock before the prior is loaded: a second run stops at once
                lock = OutputLock(output)
                try:
                    lock.acquire()
                except DWGFError as err:
                    raise option_message(err, config.as_dict()) from None
                _LOCKS.append(lock)
            if config["trainer"].get("logger") in (None, True):  # default: TensorBoard under the output folder
                config["trainer"]["logger"] = Namespace(
                    class_path="lightning.pytorch.loggers.TensorBoardLogger",
                    init_args=Namespace(save_dir=str(output), name="tensorboard", default_hp_metric=False),
                )
        elif self.subcommand == "fit" and config.get("output") and not config["trainer"].get("default_root_dir"):
            config["trainer"]["default_root_dir"] = config["output"]

    def _check_calibration(self, config) -> None:
        """A ``--model.calibration`` file must have been made for this configuration (its fingerprint, without the file)."""
        model = config.get("model")
        init = model.get("init_args") if model is not None and hasattr(model, "get") else None
        path = init.get("calibration") if init is not None and hasattr(init, "get") else None
        if not path:
            return
        from dwgf.calibration import Calibration

        try:
            calibration = Calibration.load(path, owner=str(model.get("class_path", "InverseSolver")).rsplit(".", 1)[-1])
        except DWGFError as err:
            raise option_message(err, config.as_dict()) from None
        init["calibration"] = None
        try:
            key = fingerprint(yaml.safe_load(self._parser(self.subcommand).dump(config, skip_none=False)))
        finally:
            init["calibration"] = path
        if key != calibration.config:
            raise DWGFError(f"--model.calibration {str(path)!r} was made for another configuration ({calibration.method} on "
                            f"{calibration.task}, fingerprint {calibration.config}; this one is {key}): run dwgf calibrate with this "
                            "configuration")

    def _config_dict(self) -> dict:
        config = self._sub()
        return config.as_dict() if hasattr(config, "as_dict") else dict(config)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except DWGFError as err:
            raise option_message(err, self._config_dict()) from err
        except Exception as err:  # noqa: BLE001 - jsonargparse may wrap a class's error
            found = find_dwgf_error(err)
            if found is None:
                raise
            raise option_message(found, self._config_dict()) from err

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except DWGFError as err:
            raise option_message(err, self._config_dict()) from err

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Trainer, data, model: in this order jsonargparse builds the data module (and its operator,
        cheap and the most often misconfigured) before the solver (and its prior, slow to load), so a
        bad operator argument is reported at once."""
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({"trainer." + k: v for k, v in self.trainer_defaults.items() if k != "callbacks"})
        parser.add_lightning_class_args(self._datamodule_class, "data", subclass_mode=self.subclass_mode_data)
        parser.add_lightning_class_args(self._model_class, "model", subclass_mode=self.subclass_mode_model)

    def instantiate_trainer(self, **kwargs: Any):
        if self.subcommand == "predict":
            config = self._sub()
            text = self._parser(self.subcommand).dump(config, skip_none=False)
            # the run's links, all made here: data and solver share the operator configured under
            # data.operator; the data takes the prior's image size and channels unless given its own;
            # the writer tells the data (through one Resume) which items an earlier run completed
            model, data = self.model, self.datamodule
            model.set_operator(data.operator)
            if hasattr(data, "use_prior"):
                data.use_prior(model.prior)
            resume = Resume()
            if hasattr(data, "resume"):
                data.resume = resume
            calibration = getattr(model, "calibration", None)
            writer = PredictionWriter(config["output"], data, resume, config_text=text, fingerprint=fingerprint(yaml.safe_load(text)),
                                      overwrite=bool(config.get("overwrite")), calibration=calibration)
            held = [lock for lock in _LOCKS if lock.path.parent.resolve() == Path(config["output"]).expanduser().resolve()]
            if held:
                writer.folder.lock = held[0]
            self.writer = writer  # main() reads the run's failures from it
            callbacks = [*(self._get(self.config_init, "trainer").get("callbacks") or []), writer, _StopOnSignal()]
            if config["trainer"].get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
                callbacks.append(FlowProgressBar())
            kwargs["callbacks"] = callbacks
        return super().instantiate_trainer(**kwargs)


class _StopOnSignal(Callback):
    """Keeps dwgf's SIGTERM/SIGINT handling in force during the run (Lightning installs its own SIGTERM
    handler when a run starts) and forwards the signals to the processes this one launched."""

    def on_predict_start(self, trainer, pl_module) -> None:
        for preamble in _PREAMBLE:  # the run starts: Lightning's start-up lines, held until now, are printed
            preamble.release()
        stopping.reinstall()
        launcher = getattr(trainer.strategy, "launcher", None)
        stopping.add_children(list(getattr(launcher, "procs", None) or []))

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """A launcher that fails (a full disk, a bug) stops its ranks too, instead of leaving them to wait."""
        import signal

        launcher = getattr(trainer.strategy, "launcher", None)
        for proc in list(getattr(launcher, "procs", None) or []):
            try:
                proc.send_signal(signal.SIGTERM)
            except (OSError, ValueError):
                pass


def _option(path: list[Any]) -> str:
    """``--model.step_size.lr`` from a config path (``init_args`` levels dropped)."""
    parts = [part for p in path for part in str(p).split(".")]
    return "--" + ".".join(p for p in parts if p != "init_args")


def _check_finite(config: Any, path: Optional[list[Any]] = None) -> None:
    """No option of dwgf takes NaN or Inf: one found in the config (e.g. ``lr: .inf``) is an error naming it."""
    import math

    path = path or []
    if isinstance(config, float) and not math.isfinite(config):
        raise DWGFError(f"{_option(path)}: must be a finite number, got {config}")
    items = config.items() if hasattr(config, "items") else enumerate(config) if isinstance(config, (list, tuple)) else ()
    for key, value in items:
        if not (path == [] and key in ("trainer",)):
            _check_finite(value, [*path, key])


def _check_accelerator(accelerator: Any) -> None:
    """A GPU asked for where torch sees none: one line (Lightning's is a 38-line traceback)."""
    import torch

    name = str(accelerator).lower() if isinstance(accelerator, str) else None
    if name in ("gpu", "cuda") and not torch.cuda.is_available():
        why = (f"this torch ({torch.__version__}) is built without CUDA" if torch.version.cuda is None else
               f"this torch is built for CUDA {torch.version.cuda} but sees no device (driver, CUDA_VISIBLE_DEVICES)")
        if name == "gpu" and torch.backends.mps.is_available():
            return
        raise DWGFError(f"--trainer.accelerator {accelerator}: no GPU is available here ({why}); use --trainer.accelerator cpu, or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise DWGFError(f"--trainer.accelerator {accelerator}: Apple's MPS is not available here; use --trainer.accelerator cpu, or auto")


def out_of_memory_message(err: BaseException) -> Optional[str]:
    """The one line for an out-of-memory error anywhere in ``err``'s chain (CUDA's, or the CPU allocator's), else ``None``."""
    import re

    import torch

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        text = str(err)
        cuda = isinstance(err, torch.OutOfMemoryError) or "CUDA out of memory" in text
        if cuda or (isinstance(err, RuntimeError) and "can't allocate memory" in text):
            asked = re.search(r"[Tt]ried to allocate ([\d.]+ [KMGT]i?B)", text) or re.search(r"you tried to allocate (\d+) bytes", text)
            size = asked.group(1) if asked else None
            if size is not None and size.isdigit():
                size = f"{int(size) / 2**30:.2f} GiB"
            where = "GPU" if cuda else "CPU"
            return (f"out of {where} memory{f' (tried to allocate {size})' if size else ''}; finished items are kept. Lower "
                    "--model.num_particles or --data.batch_size, set --model.decoder_chunk (e.g. 1), or use --model.prior.flow_decoder "
                    "or --model.prior.torch_dtype bfloat16 (or --trainer.precision bf16-mixed), then run the same command again to resume")
        err = err.__cause__ or err.__context__
    return None


def _check_trainer(trainer: Any) -> None:
    """The trainer options users get wrong, checked before anything is loaded (Lightning's own messages are multi-line)."""
    _check_accelerator(trainer.get("accelerator"))
    devices = trainer.get("devices")
    if devices is not None and devices != "auto":
        bad = False
        if isinstance(devices, int):
            bad = devices == 0 or devices < -1
        elif isinstance(devices, str):
            bad = not (devices.strip().lstrip("-").isdigit() or "," in devices) or devices.strip() in ("0", "")
            bad = bad or (devices.strip().lstrip("-").isdigit() and int(devices) < -1)
        elif isinstance(devices, (list, tuple)):
            bad = len(devices) == 0
        if bad:
            raise DWGFError(f"--trainer.devices: expected a number of devices >= 1, -1 (all), a list of device indices or 'auto', got {devices!r}")
        import torch

        accelerator = str(trainer.get("accelerator") or "auto")
        if devices in (-1, "-1") and (accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())):
            raise DWGFError("--trainer.devices: -1 (all devices) is for GPUs; on the CPU give a number of processes >= 1")


def _is_secondary_process() -> bool:
    """Whether the environment says this process is a rank other than the first (torchrun, SLURM, Lightning)."""
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        value = os.environ.get(key, "0")
        if value.isdigit() and int(value) > 0:
            return True
    return False


def _same_threads_in_every_process(trainer: Any) -> None:
    """On the CPU, every process uses the thread count one process would use (OMP_NUM_THREADS, else torch's
    default): Lightning would give each of k processes 1/k of the cores, and the networks' results
    depend on the thread count at rounding level, so k processes would not give the bits of one."""
    import torch

    accelerator = str(trainer.get("accelerator") or "auto")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(torch.get_num_threads())


# kinds of built-in classes listed by ``dwgf predict --help``, by base class
_KINDS = (
    ("solvers (--model)", "dwgf.solver.InverseSolver"),
    ("priors (--model.prior)", "dwgf.priors.base.LatentPrior"),
    ("forward operators (--data.operator)", "dwgf.operators.base.ForwardOperator"),
    ("regularizers (--model.regularizers)", "dwgf.regularizers.base.Regularizer"),
    ("time weightings (KLPrior weighting)", "dwgf.regularizers.weighting.TimeWeighting"),
    ("feature maps (KernelRepulsion features)", "dwgf.regularizers.kernels.FeatureMap"),
    ("data terms (--model.likelihood)", "dwgf.likelihoods.base.DataTerm"),
    ("flow optimisers (--model.optimizer)", "dwgf.optimizers.base.FlowOptimizer"),
    ("step-size schedules (--model.step_size)", "dwgf.schedules.step_size.StepSizeSchedule"),
    ("timestep schedules (--model.timesteps)", "dwgf.schedules.timesteps.TimestepSchedule"),
    ("data (--data)", "lightning.pytorch.LightningDataModule"),
)


def _first_line(obj: Any) -> str:
    import inspect
    import re

    doc = (inspect.getdoc(obj) or "").strip().split("\n\n")[0]
    line = re.sub(r":(class|meth|func|mod):", "", " ".join(doc.split()).replace("``", "")).replace("`", "")
    return line if len(line) <= 100 else line[:97].rsplit(" ", 1)[0] + " ..."


def builtins_help() -> str:
    """The built-in classes by kind, one line each: what ``dwgf predict --help`` ends with."""
    import importlib
    import inspect

    classes = {}
    for short, path in builtin_classes().items():
        module, name = path.rsplit(".", 1)
        classes[short] = getattr(importlib.import_module(module), name)
    lines = ["built-in classes (give the short name as class_path, e.g. --data.operator BoxInpainting;",
             "your own classes by full class_path, e.g. my_module.MyRegularizer):"]
    for title, base_path in _KINDS:
        module, name = base_path.rsplit(".", 1)
        base = getattr(importlib.import_module(module), name)
        members = sorted(s for s, c in classes.items() if issubclass(c, base) and (c is not base or s == "InverseSolver")
                         and not inspect.isabstract(c) and s not in ("DiffusersLatentPrior",))
        if members:
            lines.append(f"  {title}:")
            lines += [f"    {s:<26}{_first_line(classes[s])}" for s in members]
    from dwgf import methods

    functions = {name: getattr(methods, name) for name in methods.__all__ if inspect.isfunction(getattr(methods, name))}
    lines.append("  methods (--model dwgf.solver.InverseSolver --model.method dwgf.methods.<name>; settings: --model.settings.<setting>):")
    for name, fn in functions.items():
        settings = getattr(fn, "settings_class", None)
        named = f" Settings: {settings.__name__} ({', '.join(settings.names())})." if settings is not None else ""
        lines.append(f"    {name:<26}{_first_line(fn)}{named}")
    return "\n".join(lines)


def _precisions() -> list:
    import typing

    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT

    def literals(t) -> list:
        if typing.get_origin(t) is typing.Literal:
            return list(typing.get_args(t))
        return [v for a in typing.get_args(t) for v in literals(a)]

    return list(dict.fromkeys(str(v) for v in literals(_PRECISION_INPUT)))


class _HelpFormatter(LightningArgumentParser().formatter_class):  # jsonargparse's, keeping the epilog's lines
    def _fill_text(self, text, width, indent):
        return "\n".join(indent + line for line in text.splitlines())


TOP_EPILOG = (f"One more subcommand, not listed above:\n  {CALIBRATE_USAGE}\n"
              "      calibrated intervals for any method (split conformal): see dwgf calibrate --help")
TOP_DESCRIPTION = "dwgf: imaging inverse problems solved with a frozen latent diffusion prior (DWGF and the methods beside it)."
TOP_OPTIONS = ["--config", "--print_config", "--output", "--overwrite", "--seed_everything", "--model", "--data", "--trainer",
               "--ckpt_path", "--help"]


_python_formatwarning = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None):
    """dwgf's own warnings as one line, ``dwgf: warning: ...`` (one about a class's argument names its
    option); others as Python formats them."""
    if issubclass(category, DWGFWarning):
        text = option_text(message, _RUN_CONFIG) if _RUN_CONFIG else None
        return f"dwgf: warning: {text or message}\n"
    return _python_formatwarning(message, category, filename, lineno, line)


class _DropAdverts(logging.Filter):
    """Drops Lightning's advertisement for its cloud logger from the terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage().lower()


class _HeldPreamble:
    """Holds Lightning's start-up lines (the seed, the devices) until the run starts (:meth:`release`), so that a run
    refused before it starts prints its one error line alone (:meth:`drop`)."""

    class _Filter(logging.Filter):
        def __init__(self, owner: "_HeldPreamble", handler: logging.Handler):
            super().__init__()
            self.owner, self.handler = owner, handler

        def filter(self, record: logging.LogRecord) -> bool:
            if self.owner.holding:
                self.owner.held.append((self.handler, record))
                return False
            return True

    def __init__(self) -> None:
        self.holding, self.held, self.filters = True, [], []
        for name in ("lightning.pytorch", "lightning.fabric"):
            for handler in logging.getLogger(name).handlers:
                f = self._Filter(self, handler)
                handler.addFilter(f)
                self.filters.append(f)

    def release(self) -> None:
        """The run starts: the held lines are printed, later ones pass."""
        if self.holding:
            self.holding = False
            for handler, record in self.held:
                handler.handle(record)
            self.held = []

    def drop(self) -> None:
        self.holding, self.held = False, []

    def remove(self) -> None:
        for f in self.filters:
            f.handler.removeFilter(f)
        self.filters = []


_PREAMBLE: list[_HeldPreamble] = []  # the predict run's held start-up lines


def _quiet_lightning() -> None:
    """Keeps the terminal for what matters: no cloud-logging tip, no deprecation noise from Lightning's internals."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _DropAdverts) for f in handler.filters):
                handler.addFilter(_DropAdverts())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)


def _check_config_files(args: list[str]) -> None:
    """Each ``--config FILE`` must exist and be valid YAML; errors name the file, line and column."""
    for i, arg in enumerate(args):
        value = args[i + 1] if arg == "--config" and i + 1 < len(args) else arg[len("--config="):] if arg.startswith("--config=") else None
        if value is None:
            continue
        path = Path(value).expanduser()
        if not path.is_file():
            if value.lstrip().startswith(("{", "[")) or "\n" in value or ":" in value and not path.suffix:
                continue  # an inline YAML/JSON string, as jsonargparse allows
            raise DWGFError(f"--config {value!r}: no such file")
        try:
            yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise DWGFError(f"--config {value!r}: not a text (UTF-8) file") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise DWGFError(f"--config {value!r}: invalid YAML{where}: {problem}") from None


PAIR_OPTIONS = ("--data.size", "--data.init_args.size")


def join_pair_options(argv: list[Any]) -> list[Any]:
    """``--data.size H W`` (two numbers, as users type a size) as the list jsonargparse reads, ``--data.size=[H,W]``."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if isinstance(arg, str) and arg in PAIR_OPTIONS:
            values = []
            for v in argv[i + 1 : i + 3]:
                if str(v).startswith("--"):
                    break
                values.append(str(v))
            if len(values) == 2 and all(v.lstrip("-").isdigit() for v in values):
                out.append(f"{arg}=[{values[0]},{values[1]}]")
                i += 3
                continue
            if not values or not (values[0].startswith("[") or values[0] == "null"):  # a list or null goes to jsonargparse as it is
                got = " ".join(values) or "nothing"
                raise DWGFError(f"--data.size takes two whole numbers, height and width (e.g. --data.size 512 768); got {got}")
        out.append(arg)
        i += 1
    return out


def main(args: Any = None) -> None:
    """Entry point of the ``dwgf`` console script.

    Exit status: 0 done; 1 some items failed (``<output>/failures.csv``); 2 a user error or out of
    memory, printed as one ``dwgf: error: ...`` line (finished items kept); 128 + signal number after SIGTERM (143) or SIGINT (130).
    """
    # ``class_path: my_module.MyRegularizer`` finds modules in the working directory, but only after
    # everything installed: a stray safetensors.py there must never shadow the real package.
    cwd = os.getcwd()
    sys.path[:] = [p for p in sys.path if p not in ("", cwd)] + [cwd]
    argv = list(sys.argv[1:] if args is None else args)
    try:
        joined = join_pair_options(argv)
    except DWGFError as err:
        print(f"dwgf: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if joined != argv:
        argv = joined
        if args is None:
            sys.argv[1:] = argv
        else:
            args = argv
    if argv and argv[0] == "calibrate":
        return calibrate_command(argv[1:], predict=main)
    if argv[:1] in (["--version"], ["-V"]):
        from dwgf import __version__

        print(f"dwgf {__version__}")
        raise SystemExit(0)
    warnings.formatwarning = _format_warning
    _quiet_lightning()
    predicting = "predict" in argv
    if predicting:  # fit/validate/test keep Python's and Lightning's own Ctrl-C handling
        stopping.install()
        _PREAMBLE.append(_HeldPreamble())
    threads = os.environ.get("OMP_NUM_THREADS")
    refused = True  # until the command returns: what the run made in its output folder before writing is taken back
    try:
        _check_config_files([str(a) for a in argv])
        with warnings.catch_warnings():
            if args is not None:  # main(args) from Python (a benchmark, a test): the caller's own argv is not ours
                warnings.filterwarnings("ignore", message="LightningCLI's args parameter", category=UserWarning)
            cli = DWGFCLI(args=args)
        refused = False
    except argparse.ArgumentError as err:
        found = find_dwgf_error(err)
        line = str(found) if found is not None else summarize_parser_error(str(err), TOP_OPTIONS, _precisions())
        print(f"dwgf: error: {line}", file=sys.stderr)
        raise SystemExit(2) from None
    except stopping.StopRequested as stop:
        name = signal_name(stop.signum)
        print(f"dwgf: stopped by {name}{' at once' if stop.immediate else ''}; finished items are kept: run the same command again "
              "to resume", file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None
    except Exception as err:  # noqa: BLE001 - user errors become one line; anything else propagates
        memory = out_of_memory_message(err)
        if memory is not None:
            print(f"dwgf: error: {memory}", file=sys.stderr)
            raise SystemExit(2) from None
        found = find_dwgf_error(err)
        if found is None:
            raise
        print(f"dwgf: error: {found}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        _RUN_CONFIG.clear()
        for preamble in _PREAMBLE:
            preamble.drop()
            preamble.remove()
        _PREAMBLE.clear()
        if refused:
            for guard in _GUARDS:
                guard.undo()
        _GUARDS.clear()
        for lock in _LOCKS:
            lock.release()
        _LOCKS.clear()
        if predicting:
            stopping.uninstall()
        if threads is None:  # main() may run in a caller's process (tests, benchmarks): leave its environment as it was
            os.environ.pop("OMP_NUM_THREADS", None)
    writer = getattr(cli, "writer", None)  # the predict run's writer (None for fit, validate, test)
    LAST_RUN["output"] = None if writer is None else writer.output
    failures = writer.num_failures if writer is not None else 0
    if failures:
        output = writer.output
        print(f"dwgf: error: {failures} item(s) failed and were skipped; see {output / 'failures.csv'}", file=sys.stderr)
        raise SystemExit(1)


def signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


if __name__ == "__main__":
    main()
