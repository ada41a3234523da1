"""Command-line plumbing shared by the scripts (train.py, evaluate.py, prompts.py, ...).

Every value a user types is checked by argparse itself, at parse time, before any model or data
is built and before anything is written: `--batch-size 0` or `--folds a` ends in one line that
names the flag ("train.py: error: argument --batch-size: ... (see train.py --help)"), exit status 2.

- `ArgumentParser`: every script's parser, whose usage errors are that one line (no usage block).

- argparse `type=` functions: `positive_int`, `nonnegative_int`, `positive_float`,
  `nonnegative_float`, `unit_float`, `int_range(low, high)`, `int_list(allowed)`, `choice_list(choices)`, `device`.
- `HelpFormatter`: shows each flag's default, but never "(default: None)" for defaults that are
  resolved later (say them in the help text, e.g. with `per_dataset`).
- `error_message(error)`: one line for an exception, also one re-raised from a DataLoader worker
  (whose text holds the worker's whole traceback).
- `write_atomic(path, payload)` and `write_json(path, obj)`: how every file the scripts write
  reaches the disk (all or nothing, mode 0644, a failure as one line naming the path);
  `write_error` builds that line.
- `remove_stale_temps(folder, suffixes, before=...)`: what a killed write_atomic left behind.
- `add_runtime_args(group, ...)`: the run-time flags every model-running script shares
  (`--device`, `--workers`, `--cache-dir`, `--no-cache`).
- `RUNS`, `RUN_SETTINGS`, `run_folder` and `MAIN_JOB_CHECKPOINT`: where runs go, the settings that
  name a run's folder (and set evaluate.py's tables apart), and the main job's checkpoint.
- `run_main(prog, run, args)`: the scripts' error wrapper: a missing, unreadable or unwritable
  file and bad input end in one line "prog: error: ...", exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Mapping, NoReturn, Sequence


RUNS = Path("runs")  # where train.py writes its runs and evaluate.py looks for them


@dataclass(frozen=True)
class RunSetting:
    """A train.py argument that makes one run differ from another. key: its name in the run's
    config.json; tag: the run folder's suffix for a value, e.g. "loss-{}" -> "loss-bce"; path: the
    value names a file (or is 'imagenet' / 'random'): its stem goes in the suffix, its name in
    evaluate.py's table titles."""

    key: str
    tag: str
    path: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    def show(self, value: object) -> str:
        """The value as a user reads it: a file's name, a number as it would be typed."""
        if self.path and value is not None:
            return Path(str(value)).name
        return f"{value:g}" if isinstance(value, float) else str(value)

    def suffix(self, value: object) -> str:
        text = Path(str(value)).stem if self.path else self.show(value)
        return re.sub(r"[^\w.+-]", "_", self.tag.format(text))  # one folder name, whatever a file is called


# What train.py's default --out names beyond <dataset>-fold<k>-<label>-<backbone>, in this order, when
# its value is not the dataset's default: every argument that changes the trained weights or how
# best.pt is chosen. Where the data lives, the device and the workers change nothing and are not here.
# A new value (another --sam, another weights file) needs nothing more: its tag is made from the value.
RUN_SETTINGS = (
    RunSetting("sam", "sam-{}"),
    RunSetting("sam_checkpoint", "samfile-{}", path=True),
    RunSetting("backbone_weights", "weights-{}", path=True),
    RunSetting("image_size", "size{}"),
    RunSetting("shots", "{}shot"),
    RunSetting("num_queries", "q{}"),
    RunSetting("query_init", "init-{}"),
    RunSetting("label_downsample", "down-{}"),
    RunSetting("pseudo_mask_norm", "norm-{}"),
    RunSetting("loss", "loss-{}"),
    RunSetting("epochs", "epochs{}"),
    RunSetting("lr", "lr{}"),
    RunSetting("weight_decay", "wd{}"),
    RunSetting("batch_size", "batch{}"),
    RunSetting("steps_per_epoch", "steps{}"),
    RunSetting("val_episodes", "val{}"),
    RunSetting("seed", "seed{}"),
)


def run_folder(dataset: str, fold: int, label: str, backbone: str,
               differences: Mapping[str, object] | None = None) -> Path:
    """train.py's default --out: runs/<dataset>-fold<fold>-<label>-<backbone>, then one suffix per
    setting that differs from the dataset's defaults (differences: {RUN_SETTINGS key: value}), in
    RUN_SETTINGS' order, e.g. runs/pascal-fold0-mask-resnet50-q10-loss-bce. Runs of the defaults
    keep the bare name (MAIN_JOB_CHECKPOINT's folder)."""
    differences = differences or {}
    unknown = set(differences) - {setting.key for setting in RUN_SETTINGS}
    if unknown:
        raise ValueError(f"run_folder: {', '.join(sorted(unknown))} not in cli.RUN_SETTINGS")
    parts = [f"{dataset}-fold{fold}-{label}-{backbone}"]
    parts += [setting.suffix(differences[setting.key]) for setting in RUN_SETTINGS if setting.key in differences]
    return RUNS / "-".join(parts)


# The main job's model (`python train.py --dataset synthetic`): the default of segment.py --demo,
# app.py and video.py --dataset synthetic-video.
MAIN_JOB_CHECKPOINT = run_folder("synthetic", 0, "mask", "tiny") / "best.pt"


def _typed(name: str, parse: Callable[[str], object]) -> Callable[[str], object]:
    parse.__name__ = name  # argparse names the type in some of its messages
    return parse


def int_range(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (either bound may be None = open)."""
    if low is not None and high is not None:
        wanted = f"an integer from {low} to {high}"
    elif low == 1:
        wanted = "a positive integer"
    elif low == 0:
        wanted = "a non-negative integer"
    elif low is not None:
        wanted = f"an integer >= {low}"
    else:
        wanted = f"an integer <= {high}" if high is not None else "an integer"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return value

    return _typed("int", parse)


positive_int = int_range(1)
nonnegative_int = int_range(0)


def _float_above(low: float, inclusive: bool) -> Callable[[str], float]:
    wanted = "a non-negative number" if inclusive else "a positive number"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if (
            not value == value
            or value in (float("inf"), float("-inf"))
            or value < low
            or (value == low and not inclusive)
        ):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text}")
        return value

    return _typed("float", parse)


positive_float = _float_above(0.0, inclusive=False)
nonnegative_float = _float_above(0.0, inclusive=True)


def unit_float(text: str) -> float:
    """An argparse type: a number in [0, 1] (a threshold on a min-max normalised map)."""
    value = nonnegative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def int_list(allowed: Iterable[int] | None = None, *, low: int | None = None) -> Callable[[str], list[int]]:
    """An argparse type: a comma list of integers ("1,5"), each in `allowed` (or >= low);
    duplicates are dropped, order kept."""
    allowed = None if allowed is None else list(allowed)
    element = int_range(low)
    example = ",".join(map(str, allowed[:2])) if allowed else "1,5"

    def parse(text: str) -> list[int]:
        values = []
        for item in text.split(","):
            try:
                value = element(item.strip())
            except argparse.ArgumentTypeError as error:
                raise argparse.ArgumentTypeError(f"{error} (in {text!r}: a comma list, e.g. {example})") from None
            if allowed is not None and value not in allowed:
                shown = ", ".join(map(str, allowed))
                raise argparse.ArgumentTypeError(
                    f"{value} is not one of {shown} (a comma list of them, e.g. {allowed[0]})"
                )
            if value not in values:
                values.append(value)
        return values

    return _typed("int list", parse)


def choice_list(choices: Sequence[str], *, all_word: str | None = "all") -> Callable[[str], list[str]]:
    """An argparse type: one of `choices`, a comma list of them, or `all_word` for every one."""
    choices = list(choices)

    def parse(text: str) -> list[str]:
        if all_word is not None and text == all_word:
            return choices
        values = []
        for item in text.split(","):
            if item not in choices:
                also = f", or {all_word}" if all_word else ""
                raise argparse.ArgumentTypeError(
                    f"unknown {item!r}: use one of {', '.join(choices)}, a comma list{also}"
                )
            if item not in values:
                values.append(item)
        return values

    return _typed("list", parse)


def device(text: str) -> str:
    """An argparse type: a torch device this machine has ("cpu", "cuda", "cuda:1", "mps")."""
    import torch  # only the scripts that run a model take --device

    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: this machine has no CUDA device; use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text}: MPS is not available on this machine; use --device cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text}: use cpu, cuda or cuda:N")
    return text


class ArgumentParser(argparse.ArgumentParser):
    """Every script's parser: a usage error is one line, "prog: error: <message> (see prog --help)",
    exit status 2, where argparse prints its whole usage block first (a dozen lines that bury the
    message). Subparsers (prepare.py's commands) are of this class too, named "prog command"."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())  # one line, whatever a type function's message holds
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's default after its help, except where there is nothing to show (None, a
    store_true's False) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        if action.default is None or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return help
        if "default" in help.lower():
            return help
        return super()._get_help_string(action)


def per_dataset(defaults: dict[str, dict], key: str, fmt: Callable[[object], str] = str) -> str:
    """'default: pascal 100, coco 50, ...' from a {dataset: {key: value}} table, values merged
    where datasets agree, so a flag's help shows the defaults that are really used."""
    groups: dict[str, list[str]] = {}
    for dataset, values in defaults.items():
        groups.setdefault(fmt(values[key]), []).append(dataset)
    return "default: " + ", ".join(f"{'/'.join(names)} {value}" for value, names in groups.items())


_WORKER_HEADER = re.compile(
    r"Caught \w+ in DataLoader worker process \d+\.\s*Original Traceback \(most recent call last\):\n"
)


def error_message(error: BaseException) -> str:
    """The message of `error` for a one-line report.

    A DataLoader worker's exception reaches the main process with the worker's traceback inside
    its text ("Caught OSError in DataLoader worker process 0. Original Traceback ..."); only the
    original exception's own message is kept.
    """
    text = str(error)
    if not _WORKER_HEADER.search(text):
        return text
    # The last exception of the (possibly chained) traceback, after its indented frame lines.
    last = text.rsplit("Traceback (most recent call last):\n", 1)[-1]
    lines = last.splitlines()
    start = next((i for i, line in enumerate(lines) if line and not line.startswith(" ")), len(lines))
    message = "\n".join(lines[start:]).strip()
    # "OSError: image ... could not be read" -> the message after the exception's (qualified) name
    return re.sub(r"^[\w.]+: ", "", message, count=1) or text


def write_error(path, error: BaseException, *, free_bytes: int | None = None) -> OSError:
    """An OSError saying in one line why `path` could not be written ("no space left on device",
    "permission denied", ...). torch.save reports a full disk as a RuntimeError of its zip writer;
    free_bytes (measured while the partial file still exists) tells that case apart."""
    import errno as errno_codes
    import os

    code = getattr(error, "errno", None)
    if code is not None:
        reason = os.strerror(code).lower()
    elif free_bytes is not None and free_bytes < 2**20:
        reason, code = "no space left on device", errno_codes.ENOSPC
    else:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    fix = {errno_codes.ENOSPC: "free some space or write elsewhere",
           errno_codes.EDQUOT: "free some space or write elsewhere",
           errno_codes.EACCES: "make the folder writable or write elsewhere",
           errno_codes.EPERM: "make the folder writable or write elsewhere",
           errno_codes.EROFS: "write elsewhere"}.get(code, "check the disk and the folder's permissions")
    failure = OSError(f"could not write {path}: {reason}; {fix}")  # str() without an "[Errno N]" prefix
    failure.errno = code or errno_codes.EIO
    return failure


def write_atomic(path: str | Path, payload: bytes | Callable[[BinaryIO], object], *, durable: bool = False) -> None:
    """Write `path` through a temporary file in the same folder and os.replace, so readers see all
    of it or none; mode 0644 like every file the scripts write. payload: the bytes, or a function
    that fills the open binary file (`lambda f: torch.save(obj, f)`).
    durable: fsync before the rename (checkpoints: a crash right after must not leave an empty one).
    A failure (full disk, read-only folder; torch.save reports a full disk as a RuntimeError) is an
    OSError naming the path, in one line, and leaves no temporary file behind."""
    path = Path(path)
    write = payload if callable(payload) else (lambda f: f.write(payload))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise write_error(path, error) from error
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as error:
        free = None
        with contextlib.suppress(OSError):
            free = shutil.disk_usage(path.parent).free  # before the partial file is removed
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(error, (OSError, RuntimeError)):
            raise write_error(path, error, free_bytes=free) from error
        raise


def write_json(path: str | Path, obj: object) -> None:
    """`obj` as indented JSON, written atomically (results are never left half-written)."""
    write_atomic(path, json.dumps(obj, indent=2).encode())


# A killed run's temporary file (write_atomic's) older than this is stale: a live write holds its own
# for milliseconds, and two processes may write one folder at once (torchrun's ranks).
STALE_TEMP_SECONDS = 60


def remove_stale_temps(folder: Path, suffixes: Sequence[str], *, before: float) -> int:
    """Remove the temporary files write_atomic leaves in `folder` when its process is killed
    mid-write (".<name>.<8 random characters>.tmp", for names ending with one of `suffixes`) that
    were last modified before `before` (a time.time()); returns how many it removed."""
    removed = 0
    for entry in os.scandir(folder) if folder.is_dir() else ():
        if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
            continue
        target, _, tag = entry.name[1:-len(".tmp")].rpartition(".")
        if (len(tag) == 8 and target.endswith(tuple(suffixes)) and entry.is_file(follow_symlinks=False)
                and entry.stat().st_mtime < before):
            with contextlib.suppress(FileNotFoundError):  # another process got there first
                os.unlink(entry.path)
                removed += 1
    return removed


# ---------------------------------------------------------------------------------------------
# What every script that runs a model shares: run-time flags and the error wrapper.
# ---------------------------------------------------------------------------------------------

def default_device() -> str:
    import torch  # only the scripts that run a model take --device

    return "cuda" if torch.cuda.is_available() else "cpu"


def add_runtime_args(group, *, workers: bool = True, cache: Path | None = Path("cache"),
                     no_cache: bool = True) -> None:
    """--device, and where the script has them, --workers, --cache-dir (default `cache`; None: no
    cache unless one is named) and --no-cache, with the same types, defaults and help everywhere."""
    import torch

    group.add_argument("--device", type=device, default=default_device(), help="torch device")
    if workers:
        group.add_argument("--workers", type=nonnegative_int, default=min(4, torch.get_num_threads()),
                           help="DataLoader worker processes")
    if cache is not None:
        group.add_argument("--cache-dir", type=Path, default=cache, help="on-disk cache of SAM image embeddings")
    else:
        group.add_argument("--cache-dir", type=Path, default=None,
                           help="on-disk cache of the targets' SAM image embeddings (default: none)")
    if no_cache:
        group.add_argument("--no-cache", action="store_true", help="recompute SAM image embeddings every time")


def add_run_sam_args(group, sam_types: Sequence[str], *, backbone_weights: bool = True) -> None:
    """--sam, --sam-checkpoint and (backbone_weights) --backbone-weights of a script that runs a
    trained run (segment.py, app.py, video.py), with the same help everywhere; sam_types:
    model.SAM_TYPES (cli.py imports no model code)."""
    group.add_argument("--sam", choices=sam_types, default=None, metavar="SAM",
                       help="prompt this SAM instead of the run's: one with the same prompt encoder and mask decoder "
                            "(vit_t, MobileSAM, for a vit_h run; choices as train.py --sam) (default: the run's)")
    group.add_argument("--sam-checkpoint", type=Path, default=None,
                       help="SAM weights, if not where the run had them (another --sam: default checkpoints/<its "
                            "official file name>)")
    if backbone_weights:
        group.add_argument("--backbone-weights", default=None,
                           help="backbone weights: a state_dict file, if not where the run had them (default: the "
                                "run's)")


USER_ERRORS = (OSError, ImportError, ValueError)  # missing, unreadable or unwritable files; bad input


def run_main(prog: str, run: Callable[..., object], *args: object) -> object:
    """run(*args), with a user error (USER_ERRORS) ending the program in one line naming `prog`."""
    try:
        return run(*args)
    except USER_ERRORS as error:
        sys.exit(f"{prog}: error: {error_message(error)}")
