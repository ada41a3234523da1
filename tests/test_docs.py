"""The documentation says only what the code can do: every `python ...` / `torchrun ...` command shown
in README.md and docs/*.md parses with its script's own argparse parser (nothing is run, no model is
built), and every repository path, link and section anchor the pages name exists.

A command is taken from the fenced shell blocks (backslash continuations joined; `&&`, `||`, `;`, `|`
chains split; `for X in A B; do ...; done` runs once with X=A; `NAME=value` assignments and env-var
prefixes are honoured) and from inline `python ...` spans. evaluate.py hands video datasets to
video.py's parser, as evaluate.main does; `torchrun [options] script.py ...` parses the script's
arguments.

A page may also quote what a cheap command prints: an HTML comment `<!-- checked: python SCRIPT ... -->`
right before a fenced block marks that block as the command's output. The test runs the command (in a
temporary folder that holds a link to `checkpoints/`, so what it writes goes there) and requires every
non-blank line of the block among the lines it prints, in order; a number that is not what the
command prints fails. Mark only commands that run in about a second on what CI has (the code and
`checkpoints/`), never one that needs a trained run or a dataset.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Work in progress that the pages already describe: a command, script or path named here may fail
# while the feature lands (an expected failure, xfail), and is checked like any other once it parses
# or exists. Remove an entry when its work is merged.
PENDING_COMMANDS: dict[str, str] = {}  # a substring of the command -> why it may not parse yet
PENDING_SCRIPTS: dict[str, str] = {}  # a script -> why it may not exist yet
PENDING_PATHS: dict[str, str] = {}  # a path or link target -> why it may not exist yet
# Files of other projects that the pages name in backticks (the DAVIS toolkit, Matcher, SAM).
EXTERNAL_FILES = {"evaluation_method.py", "main_oss.py", "predictor.py", "mask_decoder.py", "build_sam.py"}
# What the user makes or downloads: never in the repository.
USER_DIRS = {"runs", "cache", "data", "datasets"}
USER_FILES = re.compile(r"checkpoints/(sam_vit_\w+\.pth|resnet50_v2\.pth|mobile_sam\.pt|sam2(\.1)?_hiera_[\w+]+\.pt)$")
# The peers the pages compare with: at its first mention on a page, each name is a link to its code.
PEERS = {
    "HSNet": "https://github.com/juhongm999/hsnet",
    "Matcher": "https://github.com/aim-uofa/Matcher",
    "SEEM": "https://github.com/UX-Decoder/Segment-Everything-Everywhere-All-At-Once",
    "PFENet": "https://github.com/dvlab-research/PFENet",
    "PerSAM": "https://github.com/ZrrSkywalker/Personalize-SAM",
}
# The README's terms, defined on docs/glossary.md: the first use of each links to its section there.
GLOSSARY_TERMS = {
    "main job": "main-job", "fold": "fold", "episode": "episode", "shot": "shot", "FB-IoU": "miou-and-fb-iou",
    "pseudo mask": "pseudo-mask", "FP": "fp-and-bp-query-initialisation",
}
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console"}
PATH_SUFFIXES = (".py", ".md", ".png", ".pth", ".json", ".sh")


# ---------------------------------------------------------------------------------------------
# Reading the pages.
# ---------------------------------------------------------------------------------------------

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    text: str  # as shown, one logical line
    argv: tuple[str, ...]  # [script, arg, ...] after variable substitution

    @property
    def script(self) -> str:
        return self.argv[0]


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _expand(token: str, variables: dict[str, str]) -> list[str]:
    """$NAME / ${NAME} replaced by its value (an unknown variable by 0); a token that is one whole
    variable is word-split, as the shell splits an unquoted expansion."""
    whole = re.fullmatch(r"\$\{?(\w+)\}?", token)
    if whole:
        return variables.get(whole.group(1), "0").split()
    return [re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), "0"), token)]


def shell_commands(block: str, *, page: str = "<text>", first_line: int = 1) -> list[Command]:
    """The python / torchrun commands of one shell block, in order. Stops at a `cd` (what follows
    runs in another project's folder)."""
    commands, variables = [], {}
    lines = block.split("\n")
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, line in enumerate(lines):
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append((first_line + start, pending + line))
        pending = ""
    for number, line in logical:
        line = re.sub(r"\$\([^()]*\)", "", line)  # command substitutions: only the literal part counts
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            tokens = list(lexer)
        except ValueError:  # not shell (an output block, a data tree)
            continue
        segments, current = [], []
        for token in tokens:
            if token in (";", "&&", "||", "|", "&") or token in ("do", "then", "done", "fi"):
                segments.append(current)
                current = []
            else:
                current.append(token)
        segments.append(current)
        for words in segments:
            if not words:
                continue
            if words[0] == "for" and len(words) >= 4 and words[2] == "in":
                variables[words[1]] = words[3]
                continue
            assignments = 0
            while assignments < len(words) and re.fullmatch(r"[A-Za-z_]\w*=.*", words[assignments]):
                assignments += 1
            if assignments == len(words):  # NAME=value lines set shell variables
                for word in words:
                    name, _, value = word.partition("=")
                    variables[name] = " ".join(token for part in value.split() for token in _expand(part, variables))
                continue
            words = [piece for word in words[assignments:] for piece in _expand(word, variables)]
            if words[0] == "cd":
                return commands
            script_args = _script_args(words)
            if script_args:
                commands.append(Command(page, number, line.strip(), tuple(script_args)))
    return commands


def _script_args(words: list[str]) -> list[str] | None:
    """[script, args...] of `python script.py ...` or `torchrun [options] script.py ...`; None for
    anything else (`python -m`, `pip`, `git`, `bash`, ...)."""
    if words[0] in ("python", "python3") and len(words) > 1 and not words[1].startswith("-"):
        return words[1:]
    if words[0] == "torchrun":
        for i, word in enumerate(words[1:], start=1):
            if word.endswith(".py"):
                return words[i:]
    return None


def page_commands(path: Path) -> list[Command]:
    """Every command of a page: its shell blocks, and its inline `python ...` / `torchrun ...` spans."""
    text = path.read_text()
    name = str(path.relative_to(ROOT))
    commands = []
    for match in FENCE.finditer(text):
        if match.group(1) in SHELL_LANGUAGES:
            commands += shell_commands(match.group(2), page=name, first_line=_line_of(text, match.start(2)))
    for number, span in inline_spans(text):
        if re.match(r"(python3?|torchrun) ", span):
            commands += shell_commands(span, page=name, first_line=number)
    return commands


def inline_spans(text: str) -> list[tuple[int, str]]:
    """(line, content) of every `inline code` span outside fenced blocks."""
    outside = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return [(_line_of(outside, m.start()), m.group(1)) for m in re.finditer(r"`([^`\n]+)`", outside)]


# ---------------------------------------------------------------------------------------------
# Parsing a command with its script's own parser.
# ---------------------------------------------------------------------------------------------

def _lenient_device(text: str) -> str:
    """cli.device, without asking whether this machine has the device (a page may show --device cuda)."""
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device")
    return text


def _load(script: str):
    path = ROOT / script
    if path.parent == ROOT:
        return importlib.import_module(path.stem)
    name = "docs_" + "_".join(path.relative_to(ROOT).with_suffix("").parts)
    if name not in sys.modules:
        environment = dict(os.environ)
        sys.path.insert(0, str(path.parent))  # a benchmark imports its neighbours, as when run as a script
        try:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules[name] = module
        finally:
            sys.path.remove(str(path.parent))
            os.environ.clear()
            os.environ.update(environment)  # bench_prompts.py pins thread counts for itself
    return sys.modules[name]


class _Parsed(Exception):
    pass


def _parse_with(parser: argparse.ArgumentParser, args: list[str], *, known: bool = False):
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return parser.parse_known_args(args) if known else parser.parse_args(args)
    except SystemExit as exit:
        raise AssertionError(errors.getvalue().strip().splitlines()[-1] if errors.getvalue().strip()
                             else f"exit {exit.code}") from None


def parse_command(argv: list[str] | tuple[str, ...]) -> argparse.Namespace:
    """Parse `script args...` with the script's own parser, without running anything; AssertionError
    (with argparse's one-line message) when the script is missing or an argument is refused."""
    script, args = argv[0], list(argv[1:])
    if not (ROOT / script).is_file():
        raise AssertionError(f"{script}: no such script in the repository")
    real_device = cli.device
    cli.device = _lenient_device
    try:
        module = _load(script)
        if script == "evaluate.py":  # as evaluate.main: video datasets take video.py's flags
            video = _load("video.py")
            datasets = [a.partition("=")[2] if a.startswith("--dataset=") else args[i + 1] for i, a in enumerate(args)
                        if a.startswith("--dataset=") or (a == "--dataset" and i + 1 < len(args))]
            if any(d in video.VIDEO_DATASETS for d in datasets):
                module = video
        if not hasattr(module, "build_parser"):
            return _parse_through_main(module, script, args)
        parser = module.build_parser()
        if script == "benchmarks/label_transfer.py":  # its unknown arguments go to evaluate.py
            namespace, rest = _parse_with(parser, args, known=True)
            _parse_with(_load("evaluate.py").build_parser(), rest)
            return namespace
        return _parse_with(parser, args)
    finally:
        cli.device = real_device


def _parse_through_main(module, script: str, args: list[str]) -> argparse.Namespace:
    """For a script without build_parser(): run its main() until its parser has parsed, then stop."""
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(real(self, args, namespace))

    errors = io.StringIO()
    argparse.ArgumentParser.parse_args = parse_then_stop
    saved_argv = sys.argv
    sys.argv = [script, *args]
    try:
        with contextlib.redirect_stderr(errors):
            module.main(args)
    except _Parsed as parsed:
        return parsed.args[0]
    except SystemExit as exit:
        raise AssertionError(errors.getvalue().strip().splitlines()[-1] if errors.getvalue().strip()
                             else f"exit {exit.code}") from None
    finally:
        argparse.ArgumentParser.parse_args = real
        sys.argv = saved_argv
    raise AssertionError(f"{script}: main() returned without parsing its arguments")


# ---------------------------------------------------------------------------------------------
# Paths, links and anchors.
# ---------------------------------------------------------------------------------------------

def named_paths(text: str) -> list[tuple[int, str]]:
    """(line, path) of every repository path named in an inline code span: a word with a '/' under
    one of the repository's own folders, or a script / page / shell file name. Placeholders, URLs,
    absolute paths and what a user makes (runs/, cache/, data/, downloaded weights) are left out."""
    found = []
    for number, span in inline_spans(text):
        for word in span.split():
            word = word.split("=", 1)[-1].strip("\"'(),;:").rstrip(".")
            if (not word or word.startswith("-") or "://" in word or word.startswith(("/", "~"))
                    or re.search(r"[<>*{}$…\[\]]|\.\.\.", word)):
                continue
            if "/" in word:
                first = word.split("/")[0]
                ours = (ROOT / first).exists() or first in _PENDING_TOP
                if first in USER_DIRS or first.startswith("runs-") or not ours:
                    continue
                if USER_FILES.search(word):
                    continue
                found.append((number, word))
            elif word.endswith((".py", ".md", ".sh")) and word not in EXTERNAL_FILES:
                found.append((number, word))
    return found


_PENDING_TOP = {path.split("/")[0] for path in PENDING_PATHS if "/" in path}


def links(text: str) -> list[tuple[int, str]]:
    """(line, target) of every markdown link and image outside code, web addresses left out."""
    outside = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    outside = re.sub(r"`[^`\n]+`", "", outside)
    return [(_line_of(outside, m.start()), m.group(1)) for m in re.finditer(r"\]\(([^)\s]+)\)", outside)
            if not re.match(r"[a-z]+:", m.group(1))]


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = FENCE.sub("", path.read_text())
    return {re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


# ---------------------------------------------------------------------------------------------
# Quoted output: `<!-- checked: python ... -->` before a fenced block.
# ---------------------------------------------------------------------------------------------

CHECKED_MARKER = re.compile(r"<!-- checked: (.*?) -->")
BLOCK_AFTER_MARKER = re.compile(r"[ \t]*\n```[^\n]*\n(.*?)^```", re.M | re.S)


@dataclass(frozen=True)
class CheckedBlock:
    page: str
    line: int
    command: str
    expected: tuple[str, ...] | None  # the block's non-blank lines; None: no block follows the marker


def checked_blocks(text: str, *, page: str = "<text>") -> list[CheckedBlock]:
    """Every `<!-- checked: COMMAND -->` of a page, with the lines of the fenced block right after it."""
    blocks = []
    for marker in CHECKED_MARKER.finditer(text):
        block = BLOCK_AFTER_MARKER.match(text, marker.end())
        expected = None if block is None else tuple(
            line.rstrip() for line in block.group(1).split("\n") if line.strip())
        blocks.append(CheckedBlock(page, _line_of(text, marker.start()), marker.group(1).strip(), expected))
    return blocks


def run_checked_command(command: str, folder: Path) -> list[str]:
    """The lines `command` (`python SCRIPT.py ...`, a script of this repository) prints, run in
    `folder`, which gets a link to the repository's checkpoints/."""
    argv = shlex.split(command)
    if len(argv) < 2 or argv[0] not in ("python", "python3") or not (ROOT / argv[1]).is_file():
        raise AssertionError(f"`{command}`: a checked command is `python SCRIPT.py ...`, a script of this repository")
    if not (folder / "checkpoints").exists():
        (folder / "checkpoints").symlink_to(ROOT / "checkpoints", target_is_directory=True)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / argv[1]), *argv[2:]], cwd=folder, env=environment,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"`{command}` failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return [line.rstrip() for line in done.stdout.split("\n")]


def compare_output(expected: tuple[str, ...], printed: list[str]) -> None:
    """Every expected line among the printed ones, in order; else AssertionError naming the line and
    the printed line closest to it."""
    position = 0
    for line in expected:
        try:
            position = printed.index(line, position) + 1
        except ValueError:
            closest = difflib.get_close_matches(line, printed, n=1, cutoff=0)
            raise AssertionError(f"the page shows `{line}`, the command prints "
                                 f"`{closest[0] if closest else ''}`") from None


# ---------------------------------------------------------------------------------------------
# The tests.
# ---------------------------------------------------------------------------------------------

COMMANDS = [command for page in PAGES for command in page_commands(page)]
PATHS = sorted({(str(page.relative_to(ROOT)), line, path)
                for page in PAGES for line, path in named_paths(page.read_text())})
LINKS = sorted({(page, line, target) for page in PAGES for line, target in links(page.read_text())})
CHECKED = [block for page in PAGES for block in checked_blocks(page.read_text(), page=str(page.relative_to(ROOT)))]


def _xfail_if_pending(text: str, error: AssertionError, table: dict[str, str], *, whole: bool = False) -> None:
    for key, reason in table.items():
        if (text == key if whole else key in text):
            pytest.xfail(f"{reason}: {error}")
    raise error


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.page}:{c.line}:{' '.join(c.argv)[:70]}")
def test_every_documented_command_parses(command):
    try:
        parse_command(command.argv)
    except AssertionError as error:
        error = AssertionError(f"{command.page}, line {command.line}: `{command.text}`: {error}")
        if not (ROOT / command.script).is_file():
            _xfail_if_pending(command.script, error, PENDING_SCRIPTS, whole=True)
        _xfail_if_pending(command.text, error, PENDING_COMMANDS)


@pytest.mark.parametrize("page, line, path", PATHS, ids=lambda v: str(v))
def test_every_named_repository_path_exists(page, line, path):
    if not (ROOT / path).exists():
        error = AssertionError(f"{page}, line {line}: `{path}` is not in the repository (if it belongs to "
                               "another project, add its name to EXTERNAL_FILES)")
        _xfail_if_pending(path, error, PENDING_PATHS, whole=True)


@pytest.mark.parametrize("page, line, target", LINKS,
                         ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else str(v))
def test_every_link_and_anchor_resolves(page, line, target):
    file, _, anchor = target.partition("#")
    resolved = (page.parent / file).resolve() if file else page
    name = str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(resolved)
    where = f"{page.relative_to(ROOT)}, line {line}: ({target})"
    if not resolved.exists():
        _xfail_if_pending(name, AssertionError(f"{where}: {name} does not exist"), PENDING_PATHS, whole=True)
    if anchor and resolved.suffix == ".md":
        assert anchor in anchors(resolved), f"{where}: no section '#{anchor}' in {name}"


@pytest.mark.parametrize("block", CHECKED, ids=lambda b: f"{b.page}:{b.line}:{b.command[:60]}")
def test_quoted_output_is_what_the_command_prints(block, tmp_path):
    where = f"{block.page}, line {block.line}: `{block.command}`"
    assert block.expected is not None, f"{where}: the marker is not followed by a fenced block of output"
    try:
        compare_output(block.expected, run_checked_command(block.command, tmp_path))
    except AssertionError as error:
        raise AssertionError(f"{where}: {error}") from None


def prose(text: str) -> str:
    """A page without its fenced blocks, inline code and HTML comments, at the same offsets."""
    blank = lambda m: re.sub(r"[^\n]", " ", m.group(0))  # noqa: E731
    return re.sub(r"<!--.*?-->", blank, re.sub(r"`[^`\n]+`", blank, FENCE.sub(blank, text)), flags=re.S)


def first_mention_link(text: str, name: str) -> str | None:
    """The target of the markdown link around the first mention of `name` outside code (whole words,
    a plural too); "" when that mention is not in a link; None when the page never mentions it."""
    text = prose(text)
    mention = re.search(rf"(?<![\w-]){re.escape(name)}s?(?![\w-])", text)
    if mention is None:
        return None
    for link in re.finditer(r"\[([^\]]*)\]\(([^)\s]+)\)", text):
        if link.start(1) <= mention.start() < link.end(1):
            return link.group(2)
    return ""


PEER_MENTIONS = [(str(page.relative_to(ROOT)), peer) for page in PAGES for peer in PEERS
                 if first_mention_link(page.read_text(), peer) is not None]


@pytest.mark.parametrize("page, peer", PEER_MENTIONS, ids=lambda v: str(v))
def test_each_peer_is_linked_at_its_first_mention_on_a_page(page, peer):
    target = first_mention_link((ROOT / page).read_text(), peer)
    assert target == PEERS[peer], f"{page}: the first mention of {peer} is not a link to {PEERS[peer]}"


@pytest.mark.parametrize("term", GLOSSARY_TERMS)
def test_the_readme_links_each_term_to_the_glossary_at_its_first_use(term):
    target = first_mention_link((ROOT / "README.md").read_text(), term)
    assert target is not None, f"README.md no longer uses '{term}': take it out of GLOSSARY_TERMS"
    assert target == f"docs/glossary.md#{GLOSSARY_TERMS[term]}", (
        f"README.md: the first '{term}' is not a link to docs/glossary.md#{GLOSSARY_TERMS[term]}")
    assert GLOSSARY_TERMS[term] in anchors(ROOT / "docs" / "glossary.md")


def test_every_training_option_is_on_reproduce_md():
    """The README sends the reader to reproduce.md for every training option."""
    page = (ROOT / "docs" / "reproduce.md").read_text()
    options = [option for action in _load("train.py").build_parser()._actions for option in action.option_strings
               if option.startswith("--") and option != "--help"]
    assert len(options) > 20
    assert [option for option in options if f"`{option}`" not in page] == []


def test_the_readme_shows_the_test_command_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\npython -m pytest -q tests\n" in ci
    blocks = [m.group(2) for m in FENCE.finditer((ROOT / "README.md").read_text()) if m.group(1) == "bash"]
    assert any("python -m pytest -q tests" in block.split("\n") for block in blocks)


def test_the_pages_show_the_commands_that_matter():
    scripts = {command.script for command in COMMANDS}
    assert {"train.py", "evaluate.py", "segment.py", "video.py", "prepare.py", "app.py"} <= scripts
    assert any(c.text.startswith("torchrun") for c in COMMANDS)
    assert len(PATHS) > 20 and len(LINKS) > 20
    assert len(CHECKED) >= 2 and len(PEER_MENTIONS) > 5


# The checker itself: it must catch what it is for.

def test_a_made_up_flag_in_a_page_is_caught():
    page = "Run it:\n\n```bash\npython train.py --dataset synthetic \\\n    --no-such-flag 3\n```\n"
    (command,) = [c for m in FENCE.finditer(page) for c in shell_commands(m.group(2))]
    assert command.argv == ("train.py", "--dataset", "synthetic", "--no-such-flag", "3")
    with pytest.raises(AssertionError, match="unrecognized arguments: --no-such-flag 3"):
        parse_command(command.argv)


def test_a_bad_value_a_missing_script_and_a_video_dataset_are_told_apart():
    with pytest.raises(AssertionError, match="argument --epochs"):
        parse_command(["train.py", "--epochs", "0"])
    with pytest.raises(AssertionError, match="no such script"):
        parse_command(["trian.py", "--dataset", "synthetic"])
    # evaluate.py hands davis2017 to video.py, whose --checkpoint is any path (evaluate's own: [FOLD=]PATH)
    video_args = parse_command(["evaluate.py", "--dataset", "davis2017", "--checkpoint", "9=best.pt"])
    assert video_args.checkpoint == Path("9=best.pt")
    with pytest.raises(AssertionError, match="argument --checkpoint"):
        parse_command(["evaluate.py", "--dataset", "synthetic", "--checkpoint", "9=best.pt"])


def test_shell_chains_loops_variables_and_prefixes_are_read_as_the_shell_would():
    block = ('EARLIER="--lr 1e-3 --epochs 3"\n'
             "for f in 0 1 2 3; do python train.py --fold $f $EARLIER; done   # each fold\n"
             "OMP_NUM_THREADS=2 python evaluate.py --shots 1,5 && python segment.py --demo\n"
             'out=runs/x$([ $f = 0 ] || echo -s$f); python segment.py --points "1,2;3,4" --out $out\n'
             "torchrun --standalone --nproc_per_node=4 train.py --dataset coco\n"
             "python -m pytest -q tests\n"
             "cd elsewhere && python their_script.py\n")
    assert [c.argv for c in shell_commands(block)] == [
        ("train.py", "--fold", "0", "--lr", "1e-3", "--epochs", "3"),
        ("evaluate.py", "--shots", "1,5"),
        ("segment.py", "--demo"),
        ("segment.py", "--points", "1,2;3,4", "--out", "runs/x"),
        ("train.py", "--dataset", "coco"),
    ]


def test_a_script_without_build_parser_is_parsed_through_its_main():
    assert parse_command(["prompts.py", "--demo", "--kind", "point"]).kind == "point"
    with pytest.raises(AssertionError, match="argument --kind"):
        parse_command(["prompts.py", "--demo", "--kind", "lasso"])


def test_a_quoted_number_the_command_does_not_print_is_caught(tmp_path):
    page = ("Draw one:\n\n<!-- checked: python prompts.py --demo --kind point -->\n```\n"
            "point: 18 points; 18 labelled pixels (object 59302 px, image 512x384) -> overlay.png\n```\n"
            "<!-- checked: python prompts.py --demo --kind box -->\nno block\n")
    right, no_block = checked_blocks(page)
    assert (right.line, right.command, no_block.expected) == (3, "python prompts.py --demo --kind point", None)
    printed = run_checked_command(right.command, tmp_path)
    compare_output(right.expected, printed)  # what it prints passes, with the output file in tmp_path
    assert (tmp_path / "overlay.png").is_file()
    wrong = tuple(line.replace("18 points", "19 points") for line in right.expected)
    with pytest.raises(AssertionError, match="the page shows `point: 19 points.*the command prints `point: 18 points"):
        compare_output(wrong, printed)
    with pytest.raises(AssertionError, match="a script of this repository"):
        run_checked_command("bash -c 'echo 18 points'", tmp_path)


def test_an_unlinked_first_mention_is_caught():
    assert first_mention_link("Like [HSNet](https://github.com/juhongm999/hsnet); HSNet's metric.", "HSNet") == (
        "https://github.com/juhongm999/hsnet")
    assert first_mention_link("HSNet's metric, as [HSNet](https://github.com/juhongm999/hsnet) has it.", "HSNet") == ""
    assert first_mention_link("`HSNet` in code, then [HSNet](x)", "HSNet") == "x"
    assert first_mention_link("no peer here; PFENetwork is another word", "PFENet") is None
    assert first_mention_link("The [main jobs](g.md#main-job) run", "main job") == "g.md#main-job"
