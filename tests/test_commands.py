"""Every command the docs print runs as printed (or, where it would run for hours, parses as printed).

The commands come from :func:`layerwise.book.commands.documented_commands`: README.md, CONTRIBUTING.md,
book/*.md and each chapter's "Run it yourself" section. Per kind:

- ``book`` (``layerwise-book``, ``python -m layerwise.book``): ``run`` goes through the runner's own
  parser and ``--dry-run`` (chapters, profile and parameters resolved and type-checked against each
  chapter's schema, nothing executed); ``list`` runs; the other subcommands are parsed and their
  chapters, profiles and folders checked;
- ``papermill``: papermill's own command line parses the arguments (its ``execute_notebook`` is
  replaced by a recorder), the input notebook must be one a previous command of the same block wrote
  (or exist), and the parameters papermill would inject are validated against that chapter's schema,
  as the chapter's ``coerce_injected`` does (a real papermill run of the dummy chapter checks that
  last step end to end);
- ``jupytext``: runs, on the repository's file, with its output redirected to a temporary folder;
- ``make``: the target and every ``VAR=value`` exist in the Makefile; the README's spelled-out
  equivalents are the Makefile's recipes;
- ``module`` / ``script`` (``python -m layerwise.training``, ``python benchmarks/...``): their
  argument parser accepts the arguments (the program stops right after parsing);
- ``setup`` (venv, pip, uv, conda, git, cd): the files, extras, versions and the repository URL
  they name are the project's;
- ``lint`` and ``external``: the paths exist / the command is one of a known few.
"""

from __future__ import annotations

import argparse
import os
import re
import runpy
import shlex
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from layerwise import params as P
from layerwise.book import chapters as CH
from layerwise.book import cli
from layerwise.book.colab import COLAB_DIR, repository, stale_colab
from layerwise.book.commands import command_kind, documented_commands, split_block

REPO = Path(__file__).resolve().parents[1]
COMMANDS = documented_commands(REPO)
BLOCKS: dict[tuple[str, int], list] = defaultdict(list)
for _c in COMMANDS:
    BLOCKS[_c.source, _c.block].append(_c)
REPOSITORY = repository(REPO / "_config.yml")
EXTERNAL = {("huggingface-cli", "login")}  #: programs of other projects the docs name, as printed


def _ids(kind: str) -> list:
    return [pytest.param(c, id=f"{c.where} {c.text[:60]}") for c in COMMANDS if c.kind == kind]


def _book_args(argv: tuple[str, ...]) -> list[str]:
    """The arguments after ``layerwise-book`` / ``python -m layerwise.book``."""
    return list(argv[3:] if len(argv) >= 3 and argv[1] == "-m" else argv[1:])


def _expand(args: list[str]) -> list[str]:
    env = {**os.environ, "PWD": str(REPO)}
    return [re.sub(r"\$(\w+)|\$\{(\w+)\}", lambda m: env.get(m.group(1) or m.group(2), m.group(0)), a) for a in args]


@pytest.fixture
def in_repo(tmp_path, monkeypatch):
    """The repository as current directory, a data directory (empty: nothing reads it in a dry run)
    and a cache of its own."""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("LAYERWISE_DATA_DIR", str(data))
    monkeypatch.setenv("LAYERWISE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LAYERWISE_NOTEBOOKS", raising=False)
    return tmp_path


# ---------------------------------------------------------------------------------------------
# the list itself
# ---------------------------------------------------------------------------------------------


def test_every_source_prints_commands_and_every_command_has_a_known_kind():
    sources = {c.source for c in COMMANDS}
    assert {"README.md", "CONTRIBUTING.md", "book/run_on_gpu.md"} <= sources
    chapters = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "notebooks").glob("[0-9][0-9]_*.py"))
    assert set(chapters) <= sources, "a chapter's 'Run it yourself' section prints no command"
    unknown = [f"{c.where}: {c.text}" for c in COMMANDS if c.kind == "unknown"]
    assert not unknown, f"commands of no known kind (teach layerwise.book.commands and this test): {unknown}"
    assert len(COMMANDS) >= 60


def test_block_splitting_joins_continuations_and_quotes():
    lines = ["papermill a.ipynb b.ipynb -p x 1 \\", "  -y '{\"a\": [1,", "   2]}'  # a comment",
             "python3 -m venv .venv && pip install -e '.[all]'"]
    got = [(off, argv) for off, _, argv in split_block(lines)]
    assert got[0] == (0, ["papermill", "a.ipynb", "b.ipynb", "-p", "x", "1", "-y", '{"a": [1,\n   2]}'])
    assert [a for _, a in got[1:]] == [["python3", "-m", "venv", ".venv"], ["pip", "install", "-e", ".[all]"]]
    assert command_kind(["python", "-m", "layerwise.book", "list"]) == "book"
    assert command_kind([".venv/bin/layerwise-book", "list"]) == "book"


def test_a_doc_with_a_wrong_parameter_fails(in_repo, capsys):
    """What this file guards against: an unknown parameter name stops the dry run (exit 2, one line)."""
    assert cli.main(["run", "--profile", "tiny", "--chapters", "01", "-p", "n_sequences=8", "--dry-run"]) == 2
    assert "no selected chapter declares a parameter 'n_sequences'" in capsys.readouterr().err
    with pytest.raises(Exception, match="n_sequences is no parameter"):
        _check_papermill_args(["papermill", "in.ipynb", "out.ipynb", "-p", "n_sequences", "8"], "01_layer_similarity")


# ---------------------------------------------------------------------------------------------
# layerwise-book
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cmd", _ids("book"))
def test_book_command(cmd, in_repo, capsys):
    args = _expand(_book_args(cmd.argv))
    if not args:  # "`python -m layerwise.book`" names the program: it must exist and answer --help
        with pytest.raises(SystemExit) as e:
            cli.main(["--help"])
        assert e.value.code == 0
        return
    parsed = cli._parser().parse_args(args)
    if parsed.command == "run":
        assert cli.main([*args, "--dry-run"]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert out.startswith(f"dry run of profile {parsed.profile!r}")
    elif parsed.command == "list":
        assert cli.main(args) == 0
        assert "chapters: 00_pretraining" in capsys.readouterr().out
    elif parsed.command == "build":
        assert parsed.published or parsed.profile in CH.profiles_in(REPO / "notebooks" / "profiles")
        assert (REPO / "_config.yml").is_file() and (REPO / "_toc.yml").is_file() and (REPO / "book").is_dir()
    elif parsed.command == "refresh-reference":
        nb = Path(parsed.notebooks) if parsed.notebooks else REPO / "notebooks"
        CH.select_chapters(CH.discover_chapters(nb), parsed.chapters)  # raises for an unknown chapter
        assert parsed.dest is None or (REPO / parsed.dest).is_dir()
    elif parsed.command == "colab":
        assert cli.main([*args, "--check"] if not parsed.check else args) == 0
    elif parsed.command == "sweep":  # plans and type-checks every job, submits nothing
        assert cli.main(args if parsed.dry_run else [*args, "--dry-run"]) == 0, capsys.readouterr().err
    else:  # data fetch / check: downloads; the parse above is the check
        assert parsed.command in {"data", "commands"}


# ---------------------------------------------------------------------------------------------
# papermill and jupytext
# ---------------------------------------------------------------------------------------------


def _papermill_parameters(argv: list[str]) -> tuple[str, dict]:
    """(input path, parameters) as papermill's own command line reads ``argv``."""
    import papermill.cli as pmcli

    seen: dict = {}

    def record(input_path, output_path, parameters=None, **kw):
        seen.update(input=input_path, parameters=dict(parameters or {}))

    orig = pmcli.execute_notebook
    pmcli.execute_notebook = record
    try:
        pmcli.papermill.main(args=argv[1:], prog_name="papermill", standalone_mode=False)
    finally:
        pmcli.execute_notebook = orig
    params = {k: v for k, v in seen["parameters"].items() if not k.startswith("PAPERMILL_")}
    return seen["input"], params


def _check_papermill_args(argv: list[str], chapter: str) -> dict:
    _, values = _papermill_parameters(argv)
    nb = CH.read_chapter(REPO / "notebooks" / f"{chapter}.py")
    return P.validate(chapter, CH.schema(nb, chapter), values)


def _jupytext_io(argv: tuple[str, ...]) -> tuple[str, str]:
    """(source .py, output path) of a ``jupytext --to ipynb ... -o OUT SRC`` command."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--to")
    ap.add_argument("-o", "--output")
    ap.add_argument("src")
    a = ap.parse_args(list(argv[1:]))
    assert a.to == "ipynb", "the chapters are py:percent: convert them --to ipynb"
    return a.src, a.output or str(Path(a.src).with_suffix(".ipynb"))


@pytest.mark.parametrize("cmd", _ids("papermill"))
def test_papermill_command(cmd):
    block = BLOCKS[cmd.source, cmd.block]
    written = {}
    for c in block[: block.index(cmd)]:
        if c.kind == "jupytext":
            src, out = _jupytext_io(c.argv)
            written[out] = Path(src).stem
    input_path, _ = _papermill_parameters(list(cmd.argv))
    assert input_path in written or (REPO / input_path).is_file(), \
        f"{cmd.where}: papermill reads {input_path}, which no command before it writes (convert the chapter first)"
    chapter = written.get(input_path) or Path(input_path).stem
    values = _check_papermill_args(list(cmd.argv), chapter)
    assert values.get("profile") in (None, "tiny", "gpu", "paper")
    assert isinstance(values.get("models", []), list)


@pytest.mark.parametrize("cmd", _ids("jupytext"))
def test_jupytext_command(cmd, tmp_path, monkeypatch):
    import nbformat
    from jupytext.cli import jupytext as jupytext_main

    src, out = _jupytext_io(cmd.argv)
    monkeypatch.chdir(REPO)
    target = tmp_path / Path(out).name
    args = [a if a != out else str(target) for a in cmd.argv[1:]]
    jupytext_main(args)
    nb = nbformat.read(str(target), as_version=4)
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), f"{src}: no parameters cell"


@pytest.mark.slow
def test_papermill_command_line_types_list_parameters(dummy_notebooks, tmp_path):
    """The real papermill command line, `-p models '[a, b]'` (injected as text): the chapter's
    coerce_injected turns it into a list before anything reads it."""
    import nbformat
    from jupytext.cli import jupytext as jupytext_main

    src = tmp_path / "99.ipynb"
    jupytext_main(["--to", "ipynb", "-o", str(src), str(dummy_notebooks / "99_dummy.py")])
    out = tmp_path / "99.out.ipynb"
    done = subprocess.run([sys.executable, "-m", "papermill", str(src), str(out), "-p", "models", "[a, b]",
                           "-p", "n_points", "3", "-p", "cache_dir", str(tmp_path)], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    text = str(nbformat.read(str(out), as_version=4).cells)
    assert "| models | a, b |" in text and "n_points = 3" in text


# ---------------------------------------------------------------------------------------------
# make, python programs, setup, lint
# ---------------------------------------------------------------------------------------------


def _makefile() -> str:
    return (REPO / "Makefile").read_text()


@pytest.mark.parametrize("cmd", _ids("make"))
def test_make_command(cmd):
    text = _makefile()
    targets = set(re.findall(r"^([\w.-]+):", text, re.M))
    variables = set(re.findall(r"^(\w+)\s*[?:]?=", text, re.M))
    for a in cmd.argv[1:]:
        if "=" in a:
            assert a.split("=", 1)[0] in variables, f"{cmd.where}: the Makefile has no variable {a.split('=')[0]}"
        else:
            assert a in targets, f"{cmd.where}: the Makefile has no target {a}"


def _normalise(argv: list[str]) -> list[str]:
    out = [a for a in argv if a != "--quiet"]
    if out[:3] == [".venv/bin/python", "-m", "pip"]:
        out = [".venv/bin/pip", *out[3:]]
    if out[:3] == [".venv/bin/python", "-m", "layerwise.book"]:
        out = [".venv/bin/layerwise-book", *out[3:]]
    return out


def test_readme_spelled_out_commands_are_the_makefile_recipes():
    recipes = {}
    for target in ("book", "test"):
        # run inside `make test` too: without MAKEFLAGS/MAKELEVEL a sub-make prints no "Entering directory"
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
        done = subprocess.run(["make", "--no-print-directory", "-n", "-B", target], cwd=REPO, env=env,
                              capture_output=True, text=True, check=True)
        lines = done.stdout.replace("\\\n", " ").splitlines()
        recipes[target] = [_normalise(shlex.split(x)) for x in lines if x.strip() and not x.startswith("touch ")]
    chains = defaultdict(list)
    for c in COMMANDS:
        if c.source == "README.md" and not c.inline:
            chains[c.line].append(_normalise(list(c.argv)))
    spelled = [chain for chain in chains.values() if chain[0][:3] == ["python3", "-m", "venv"]]
    assert len(spelled) == 2
    assert sorted(map(str, spelled)) == sorted(map(str, recipes.values()))


def _parse_only(run, argv: list[str]) -> None:
    """Run a program until its argparse parser has parsed ``argv``; stop there."""
    class Parsed(Exception):
        pass

    real = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        real(self, args, namespace)
        raise Parsed

    saved = sys.argv
    sys.argv = argv
    argparse.ArgumentParser.parse_args = parse_and_stop  # type: ignore[method-assign]
    try:
        with pytest.raises(Parsed):
            run()
    finally:
        argparse.ArgumentParser.parse_args = real  # type: ignore[method-assign]
        sys.argv = saved


@pytest.mark.parametrize("cmd", _ids("module") + _ids("script"))
def test_python_program_parses_its_arguments(cmd, monkeypatch):
    monkeypatch.chdir(REPO)
    if cmd.kind == "module":
        module = cmd.argv[2]
        _parse_only(lambda: runpy.run_module(module, run_name="__main__", alter_sys=True), [module, *cmd.argv[3:]])
    else:
        script = REPO / cmd.argv[1]
        assert script.is_file(), f"{cmd.where}: no such file {cmd.argv[1]}"
        assert "argparse" in script.read_text(), f"{script} has no argument parser to check"
        _parse_only(lambda: runpy.run_path(str(script), run_name="__main__"), [str(script), *cmd.argv[2:]])


def _extras() -> set[str]:
    import tomllib

    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def _check_requirement(spec: str, where: str) -> None:
    m = re.fullmatch(r"(?:layerwise|\.|-e|)\s*(?:\[([\w,]+)\])?\s*(?:@\s*(\S+))?", spec.strip())
    assert m is not None, f"{where}: cannot read the requirement {spec!r}"
    extras, url = m.group(1), m.group(2)
    assert set((extras or "").split(",")) - {""} <= _extras(), f"{where}: unknown extras in {spec!r}"
    if url is not None:
        assert url in (REPOSITORY.pip_spec, f"git+{REPOSITORY.url}"), f"{where}: install from {url}, not the repository"


@pytest.mark.parametrize("cmd", _ids("setup"))
def test_setup_command(cmd):
    argv = [os.path.basename(cmd.argv[0]), *cmd.argv[1:]]
    torch_pin = re.search(r"^TORCH_INSTALL \?= (\S+)", _makefile(), re.M).group(1)
    if argv[:3] in (["python3", "-m", "venv"], ["python", "-m", "venv"]) or argv[0] in (".", "source"):
        return
    if argv[0] in ("pip", "uv"):
        rest = argv[2:] if argv[0] == "pip" else argv[3:]
        assert "install" in argv[:3]
        i = 0
        while i < len(rest):
            a = rest[i]
            if a in ("--index-url", "--python", "-c"):
                if a == "-c":
                    assert (REPO / rest[i + 1]).is_file(), f"{cmd.where}: no {rest[i + 1]}"
                i += 2
                continue
            if a.startswith("torch=="):
                assert a == torch_pin, f"{cmd.where}: {a}, but the Makefile installs {torch_pin}"
            elif a == "-e":
                _check_requirement(rest[i + 1], cmd.where)
                i += 1
            elif a.startswith(("layerwise", ".[")):
                _check_requirement(a, cmd.where)
            else:
                assert a in ("torch", "uv"), f"{cmd.where}: installs {a!r}, which the project does not name"
            i += 1
        return
    if argv[0] == "conda":
        env = yaml.safe_load((REPO / "environment.yml").read_text())
        assert argv[1:] in (["env", "create", "-f", "environment.yml"], ["activate", env["name"]]), \
            f"{cmd.where}: conda is used as environment.yml says (conda env create -f environment.yml)"
        return
    if argv[0] == "git":
        assert argv[1:] == ["clone", REPOSITORY.url], f"{cmd.where}: clone {REPOSITORY.url} (from _config.yml)"
        return
    if argv[0] == "cd":
        assert argv[1:] == [REPOSITORY.name], f"{cmd.where}: the clone's folder is {REPOSITORY.name}"
        return
    raise AssertionError(f"{cmd.where}: no check for {cmd.text}")


@pytest.mark.parametrize("cmd", _ids("lint") + _ids("external"))
def test_lint_and_external_commands(cmd):
    prog = os.path.basename(cmd.argv[0])
    if cmd.kind == "external":
        assert tuple(cmd.argv) in EXTERNAL, f"{cmd.where}: an unchecked program: {cmd.text}"
        return
    paths = [a for a in cmd.argv[1:] if not a.startswith("-") and a not in ("check", "pytest")]
    if prog == "python":  # python -m pytest ...: the option values are files
        paths = [a for a in paths if "/" in a or a.endswith((".cfg", ".py"))]
    for p in paths:
        assert (REPO / p).exists(), f"{cmd.where}: {p} does not exist"


# ---------------------------------------------------------------------------------------------
# Colab and the repository URL
# ---------------------------------------------------------------------------------------------


def test_colab_notebooks_are_up_to_date():
    stale = stale_colab(REPO / "notebooks", REPO / COLAB_DIR, REPOSITORY)
    assert not stale, f"out of date: {[p.name for p in stale]}: run `layerwise-book colab` and commit {COLAB_DIR}/"


def test_colab_notebook_installs_then_keeps_the_parameters_cell_defaults():
    import nbformat

    nb = nbformat.read(str(REPO / COLAB_DIR / "03_layer_skipping.ipynb"), as_version=4)
    install = nb.cells[1]
    assert install.metadata.tags == ["colab-install"]
    assert f'%pip install --quiet "layerwise[eval] @ {REPOSITORY.pip_spec}"' in install.source
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert not any("injected-parameters" in t for t in tags)
    (params,) = [c for c, t in zip(nb.cells, tags) if "parameters" in t]
    source = (REPO / "notebooks" / "03_layer_skipping.py").read_text()
    assert params.source in source and 'profile = "tiny"' in params.source
    assert f"colab.research.google.com/github/{REPOSITORY.slug}/blob/{REPOSITORY.branch}/{COLAB_DIR}/" \
           "03_layer_skipping.ipynb" in nb.cells[0].source
    assert all(not c.get("outputs") for c in nb.cells)


def test_no_page_or_notebook_has_a_placeholder_or_another_repository_url():
    files = [*(REPO / "book").glob("*.md"), *(REPO / "notebooks").glob("*.py"), *(REPO / COLAB_DIR).glob("*.ipynb"),
             REPO / "README.md", REPO / "CONTRIBUTING.md", REPO / "_config.yml", REPO / "environment.yml"]
    bad = []
    for f in files:
        text = f.read_text()
        if re.search(r"<owner>|<repo>|<this repository>|<repository>", text):
            bad.append(f"{f.name}: placeholder")
        for url in re.findall(r"https://(?:github\.com|colab\.research\.google\.com/github)/[\w.-]+/[\w.-]+", text):
            slug = "/".join(url.rstrip("/").split("/")[-2:])
            if slug.removesuffix(".git") != REPOSITORY.slug:
                bad.append(f"{f.name}: {url}")
    assert not bad, f"links must come from repository.url in _config.yml ({REPOSITORY.url}): {bad}"
