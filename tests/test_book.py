"""The book runner: parameter resolution, skip-if-unchanged, bad-input errors, a real run and build.

The chapter used here is tests/data/99_dummy.py (with profiles in tests/data/profiles/), so these
tests do not depend on the real chapters.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from layerwise import book
from layerwise.config import LayerwiseError

DUMMY = "99_dummy"
REPO = Path(__file__).resolve().parents[1]  #: the clone the tests run from


def _plan(dummy_notebooks: Path, tmp_path: Path, **kw):
    kw.setdefault("overrides", {"data_dir": str(tmp_path)})
    return book.plan_run("tiny", notebooks_dir=dummy_notebooks, out=tmp_path / "out", cache=tmp_path / "cache", **kw)


# ---------------------------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------------------------


def test_overrides_are_parsed_as_yaml():
    got = book.parse_overrides(["n=3", "models=[a, b/c]", "name=x", "flag=true", "ratio=0.5", "empty="])
    assert got == {"n": 3, "models": ["a", "b/c"], "name": "x", "flag": True, "ratio": 0.5, "empty": ""}
    with pytest.raises(LayerwiseError, match="name=value"):
        book.parse_overrides(["n_points"])


def test_resolution_order_common_then_chapter_then_overrides():
    declared = {"profile": "'tiny'", "preset": "'tiny'", "n": "1", "device": "'auto'"}
    sections = {"common": {"preset": "small", "n": 2, "device": "cpu", "other": 9}, "01_x": {"n": 3}}
    params, dropped = book.resolve_parameters("gpu", sections, "01_x", declared, {"device": "cuda"})
    # profile name always comes from the profile, chapter section beats common, -p beats both
    assert params == {"profile": "gpu", "preset": "small", "n": 3, "device": "cuda"}
    assert dropped == ["other"]
    with pytest.raises(LayerwiseError, match="not declared"):
        book.resolve_parameters("gpu", {"common": {}, "01_x": {"typo": 1}}, "01_x", declared, {})


def test_plan_reads_declared_parameters_and_profile(dummy_notebooks, tmp_path):
    (plan,) = _plan(dummy_notebooks, tmp_path, overrides={"data_dir": str(tmp_path), "seed": 7})
    assert plan.chapter == DUMMY
    p = plan.parameters
    assert p["profile"] == "tiny" and p["n_points"] == 4 and p["device"] == "cpu" and p["seed"] == 7
    assert "not_in_dummy" not in p and plan.skipped_common == ["not_in_dummy"]
    assert p["cache_dir"] == str((tmp_path / "cache").resolve())
    assert p["data_dir"] == str(tmp_path.resolve())
    assert plan.output == tmp_path / "out" / "notebooks" / f"{DUMMY}.ipynb"


def test_values_are_type_checked_and_yaml_text_is_parsed(dummy_notebooks, tmp_path):
    (plan,) = _plan(dummy_notebooks, tmp_path, overrides={"data_dir": str(tmp_path), "models": "[a, b/c]",
                                                           "n_points": "6"})
    assert plan.parameters["models"] == ["a", "b/c"] and plan.parameters["n_points"] == 6
    with pytest.raises(LayerwiseError, match=r"^chapter 99_dummy: parameter n_points = 'many' is not an integer "
                                             r"\(its default is 5\): give an integer, e.g. -p n_points=5$"):
        _plan(dummy_notebooks, tmp_path, overrides={"data_dir": str(tmp_path), "n_points": "many"})
    rc = book.main(["run", "--notebooks", str(dummy_notebooks), "--out", str(tmp_path), "-p", "seed=[1, 2]"])
    assert rc == 2


def test_runner_finds_the_notebooks_from_flag_variable_or_current_directory(dummy_notebooks, tmp_path,
                                                                            monkeypatch, capsys):
    import shutil

    from layerwise import config

    assert not hasattr(config, "REPO_ROOT")
    sources = Path(book.__file__).resolve().parents[1].rglob("*.py")
    assert not [p for p in sources if "REPO_ROOT" in p.read_text()], "the library must not locate a checkout"
    clone = tmp_path / "clone"
    shutil.copytree(dummy_notebooks, clone / "notebooks")
    monkeypatch.delenv(book.NOTEBOOKS_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    monkeypatch.delenv("LAYERWISE_CACHE_DIR", raising=False)
    monkeypatch.chdir(clone)  # a clone's root: notebooks/ is found there
    (plan,) = book.plan_run("tiny", overrides={"data_dir": str(tmp_path)})
    assert plan.source == clone / "notebooks" / f"{DUMMY}.py"
    assert plan.output == clone / "_build" / "tiny" / "notebooks" / f"{DUMMY}.ipynb"
    assert plan.parameters["cache_dir"] == str(tmp_path / "home-cache" / "layerwise")  # the library's default
    assert book.main(["list"]) == 0 and "chapters: 99_dummy" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)  # elsewhere: the variable, else an error naming the flag
    monkeypatch.setenv(book.NOTEBOOKS_ENV, str(clone / "notebooks"))
    assert book.discover_chapters() == {DUMMY: clone / "notebooks" / f"{DUMMY}.py"}
    monkeypatch.delenv(book.NOTEBOOKS_ENV)
    with pytest.raises(LayerwiseError, match=r"no chapters folder: .* pass --notebooks DIR .*LAYERWISE_NOTEBOOKS"):
        book.plan_run("tiny")
    assert book.main(["run"]) == 2
    assert capsys.readouterr().err.startswith("error: no chapters folder")


@pytest.mark.parametrize("profile", ["tiny", "gpu", "paper"])
def test_every_profile_type_checks_against_the_chapters(profile, tmp_path):
    """The book's own profiles: every value a chapter receives has its parameter's type."""
    plans = book.plan_run(profile, notebooks_dir=REPO / "notebooks", out=tmp_path, cache=tmp_path / "cache",
                          overrides={"data_dir": str(tmp_path)})
    assert sorted(p.chapter for p in plans) == sorted(book.KNOWN_CHAPTERS)
    assert plans[-1].chapter == "08_claims_ledger"  # the ledger reads the others' results: it runs last
    assert all(p.parameters["profile"] == profile and isinstance(p.parameters["models"], list) for p in plans)


# ---------------------------------------------------------------------------------------------
# bad input: one line, naming the fix
# ---------------------------------------------------------------------------------------------


def test_unknown_chapter_lists_known(dummy_notebooks, tmp_path):
    with pytest.raises(LayerwiseError, match=r"unknown chapter '42_nope': use one of 99_dummy"):
        _plan(dummy_notebooks, tmp_path, chapters=["42_nope"])
    # the NN prefix selects a chapter too
    assert [p.chapter for p in _plan(dummy_notebooks, tmp_path, chapters=["99"])] == [DUMMY]


def test_unknown_profile_lists_profiles(dummy_notebooks, tmp_path):
    with pytest.raises(LayerwiseError, match=r"unknown profile 'huge': use one of broken, gpu, tiny"):
        book.plan_run("huge", notebooks_dir=dummy_notebooks, out=tmp_path)


def test_undeclared_override_is_an_error(dummy_notebooks, tmp_path):
    with pytest.raises(LayerwiseError, match=r"-p n_pionts: no selected chapter declares"):
        _plan(dummy_notebooks, tmp_path, overrides={"n_pionts": 3})


def test_profile_section_with_undeclared_key_is_an_error(dummy_notebooks, tmp_path):
    with pytest.raises(LayerwiseError, match=r"no_such_parameter not declared"):
        book.plan_run("broken", notebooks_dir=dummy_notebooks, out=tmp_path,
                      overrides={"data_dir": str(tmp_path)})


def test_missing_data_dir_is_an_error(dummy_notebooks, tmp_path, monkeypatch):
    # an explicit data_dir must exist, whatever the profile
    with pytest.raises(LayerwiseError, match=r"chapter 99_dummy: data directory .*nowhere.* does not exist"):
        _plan(dummy_notebooks, tmp_path, overrides={"data_dir": str(tmp_path / "nowhere")})
    monkeypatch.setenv("LAYERWISE_DATA_DIR", str(tmp_path / "gone"))
    # the tiny profile generates its data: no data directory needed, data_dir stays ""
    (plan,) = _plan(dummy_notebooks, tmp_path, overrides={})
    assert plan.parameters.get("data_dir", "") == ""
    # the gpu profile requires one: the error names the variable to set
    with pytest.raises(LayerwiseError, match=r"data directory .*gone.* LAYERWISE_DATA_DIR"):
        book.plan_run("gpu", notebooks_dir=dummy_notebooks, out=tmp_path)


def test_cli_prints_one_line_error(dummy_notebooks, tmp_path, capsys):
    rc = book.main(["run", "--profile", "tiny", "--notebooks", str(dummy_notebooks), "--out", str(tmp_path),
                    "--chapters", "07_compression"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: unknown chapter '07_compression': use one of 99_dummy")


def test_dry_run_prints_the_resolved_plan_and_runs_nothing(dummy_notebooks, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["run", "--profile", "tiny", "--notebooks", str(dummy_notebooks), "--out", str(out), "--cache-dir",
            str(tmp_path / "cache"), "-p", "n_points=7", "-p", f"data_dir={tmp_path}", "--dry-run", "--build"]
    assert book.main(args) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == "dry run of profile 'tiny': 1 chapter(s); nothing is executed"
    assert f"{DUMMY}: would run -> {out / 'notebooks' / (DUMMY + '.ipynb')}" in text
    assert "n_points=7" in text and "dropped): not_in_dummy" in text and "then: build the site" in text
    assert not out.exists()  # nothing executed, nothing written
    # a bad value stops it like a real run
    assert book.main([*args[:-2], "-p", "n_points=[1]", "--dry-run"]) == 2
    assert "n_points" in capsys.readouterr().err


def test_publish_refuses_other_profiles(tmp_path):
    with pytest.raises(LayerwiseError, match="only the 'gpu' profile is published"):
        book.publish("tiny", out=tmp_path, book_dir=tmp_path / "book")


# ---------------------------------------------------------------------------------------------
# skip if unchanged
# ---------------------------------------------------------------------------------------------


def test_fingerprint_changes_with_source_parameters_and_library():
    base = book.fingerprint("x = 1", {"n": 1}, "lib1")
    assert base == book.fingerprint("x = 1", {"n": 1}, "lib1")
    assert base != book.fingerprint("x = 2", {"n": 1}, "lib1")
    assert base != book.fingerprint("x = 1", {"n": 2}, "lib1")
    assert base != book.fingerprint("x = 1", {"n": 1}, "lib2")


def test_unchanged_chapter_is_skipped_without_running(dummy_notebooks, tmp_path):
    (plan,) = _plan(dummy_notebooks, tmp_path)
    plan.output.parent.mkdir(parents=True)
    plan.output.write_text("{}")
    plan.stamp.write_text(json.dumps({"fingerprint": plan.fingerprint}))
    assert book.is_up_to_date(plan)
    # no kernel starts: a run would overwrite the fake output
    status = book.run("tiny", notebooks_dir=dummy_notebooks, out=tmp_path / "out", cache=tmp_path / "cache",
                      overrides={"data_dir": str(tmp_path)}, progress=False)
    assert status == {DUMMY: "skipped"} and plan.output.read_text() == "{}"
    # a changed parameter makes it stale
    (changed,) = _plan(dummy_notebooks, tmp_path, overrides={"data_dir": str(tmp_path), "n_points": 9})
    assert changed.fingerprint != plan.fingerprint and not book.is_up_to_date(changed)


def test_kernels_find_the_running_books_chapters_wherever_the_notebooks_go(dummy_notebooks, tmp_path, monkeypatch):
    # chapter 10 runs other chapters from inside its kernel: with --out outside the clone it cannot find
    # them by walking up from its working directory, so the runner names the chapters folder for it
    monkeypatch.delenv(book.NOTEBOOKS_ENV, raising=False)
    (plan,) = _plan(dummy_notebooks, tmp_path)
    assert plan.output.is_relative_to(tmp_path / "out")
    assert plan.env[book.NOTEBOOKS_ENV] == str(book.locate(dummy_notebooks).notebooks)
    assert book.find_notebooks(plan.env[book.NOTEBOOKS_ENV]) == book.locate(dummy_notebooks).notebooks


# ---------------------------------------------------------------------------------------------
# table of contents
# ---------------------------------------------------------------------------------------------


def test_toc_lists_intro_chapters_and_pages(tmp_path):
    (tmp_path / "chapters").mkdir()
    for name in ["intro.md", "run_on_gpu.md", "chapters/01_b.ipynb", "chapters/00_a.ipynb"]:
        (tmp_path / name).write_text("")
    toc = book.make_toc(tmp_path)
    assert toc["root"] == "intro"
    assert toc["parts"][0]["chapters"] == [{"file": "chapters/00_a"}, {"file": "chapters/01_b"}]
    assert toc["parts"][1]["chapters"] == [{"file": "run_on_gpu"}]
    (tmp_path / "intro.md").unlink()
    with pytest.raises(LayerwiseError, match="intro.md"):
        book.make_toc(tmp_path)


# ---------------------------------------------------------------------------------------------
# the real thing: papermill runs the dummy chapter, jupyter-book builds its site
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixed_library():
    """Pin the library fingerprint for this module, so that an edit of src/ while the tests run (in a
    shared checkout) does not make the second run of the same chapter look stale."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(book.runner, "library_fingerprint", lambda: "pinned-for-the-test")
        yield


@pytest.fixture(scope="module")
def executed(tmp_path_factory, dummy_notebooks, fixed_library):
    tmp = tmp_path_factory.mktemp("book")
    status = book.run("tiny", notebooks_dir=dummy_notebooks, out=tmp / "out", cache=tmp / "cache",
                      overrides={"data_dir": str(tmp), "n_points": 3}, progress=False)
    return tmp, status


@pytest.mark.slow
def test_run_executes_chapter_with_banner_and_stamp(executed, dummy_notebooks, fixed_library):
    tmp, status = executed
    assert status == {DUMMY: "ran"}
    nb = nbformat.read(str(tmp / "out" / "notebooks" / f"{DUMMY}.ipynb"), as_version=4)
    banner = nb.cells[0]
    assert banner.cell_type == "markdown" and "nbval-skip" in banner.metadata.tags
    assert "`tiny` profile" in banner.source and "controlled triplet" in banner.source
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.tags)
    assert "n_points = 3" in injected.source and 'profile = "tiny"' in injected.source
    prov = next(c for c in nb.cells if "provenance" in c.metadata.tags)
    assert "nbval-skip" in prov.metadata.tags and "provenance" in json.dumps(prov.outputs)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the figure was not displayed inline"
    # the chapter wrote its artefact into the cache the runner gave it
    assert json.loads((tmp / "cache" / "dummy" / "tiny.json").read_text()) == {"n_points": 3, "sum": 3.0}
    stamp = json.loads((tmp / "out" / "notebooks" / f"{DUMMY}.stamp.json").read_text())
    assert stamp["parameters"]["n_points"] == 3
    # unchanged: skipped the second time
    again = book.run("tiny", notebooks_dir=dummy_notebooks, out=tmp / "out", cache=tmp / "cache",
                     overrides={"data_dir": str(tmp), "n_points": 3}, progress=False)
    assert again == {DUMMY: "skipped"}


@pytest.mark.slow
def test_build_site_renders_chapter_with_local_mathjax(executed):
    tmp, _ = executed
    index = book.build_site("tiny", out=tmp / "out")
    page = (index.parent / "chapters" / f"{DUMMY}.html").read_text()
    assert "Produced by the" in page and "(tiny profile)" in page
    assert "_static/mathjax/tex-chtml.js" in page and "cdn.jsdelivr" not in page
    assert (index.parent / "_static" / "mathjax" / "tex-chtml.js").is_file()
    # the "Open in Colab" link, from repository.url in _config.yml (layerwise.book.colab)
    from layerwise.book.colab import colab_url, repository

    assert f'href="{colab_url(repository(REPO / "_config.yml"), DUMMY)}"' in page
    assert '<img alt="_images/' in page or "_images/" in page
    # the root config describes the published book and was not touched
    assert not (REPO / "book" / "chapters" / f"{DUMMY}.ipynb").exists()


@pytest.mark.slow
def test_refresh_reference_resets_machine_paths(executed, dummy_notebooks, tmp_path):
    tmp, _ = executed
    (ref,) = book.refresh_reference(chapters=[DUMMY], dest=tmp_path, notebooks_dir=dummy_notebooks,
                                    out=tmp / "out", run_first=False)
    nb = nbformat.read(str(ref), as_version=4)
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.tags)
    assert 'cache_dir = ""' in injected.source and 'data_dir = ""' in injected.source


@pytest.mark.slow
def test_papermill_alone_gets_typed_parameters(dummy_notebooks, tmp_path):
    """`papermill -p models '[a, b]'` injects text; the chapter's first cell after its parameters
    (layerwise.params.coerce_injected) turns it into the list, and rejects an undeclared name."""
    import papermill as pm

    nb = book.read_chapter(dummy_notebooks / f"{DUMMY}.py")
    out = pm.execute_notebook(nb, str(tmp_path / "out.ipynb"), cwd=str(tmp_path), progress_bar=False,
                              parameters={"models": "[a, b]", "n_points": "3", "cache_dir": str(tmp_path)})
    text = json.dumps([o for c in out.cells if c.cell_type == "code" for o in c.outputs])
    assert "| models | a, b |" in text and "n_points = 3, sum = 3.000" in text
    with pytest.raises(pm.PapermillExecutionError, match="n_pionts is no parameter of it"):
        pm.execute_notebook(book.read_chapter(dummy_notebooks / f"{DUMMY}.py"), str(tmp_path / "bad.ipynb"),
                            cwd=str(tmp_path), progress_bar=False, parameters={"n_pionts": 3})


def test_declared_parameters_survive_quotes_in_comments():
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('a = ""      # "" = the default\nb: int = 2\nc, d = 1, 2\nimport os\n')
    cell.metadata["tags"] = ["parameters"]
    nb.cells.append(cell)
    assert book.declared_parameters(nb) == {"a": '""', "b": "2"}
    nb.cells[0].metadata["tags"] = []
    with pytest.raises(LayerwiseError, match="no cell tagged 'parameters'"):
        book.declared_parameters(nb, "01_x")


def test_root_toc_describes_existing_pages_of_the_published_book():
    import yaml

    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc.get("parts", []) for c in part["chapters"]]
    for f in files:
        assert any((REPO / "book" / f"{f}{ext}").is_file() for ext in (".md", ".ipynb")), \
            f"_toc.yml lists {f} but book/ has no such page: run `layerwise-book run --profile gpu --publish`"


def test_commit_in_provenance_can_be_passed_in(monkeypatch):
    # a synced copy of the working tree (e.g. on a remote GPU machine) has a stale .git: the real commit is passed in
    from layerwise.book import origin as B

    monkeypatch.delenv(B.COMMIT_ENV, raising=False)
    own = B._git_commit()
    assert own != "abc1234"
    monkeypatch.setenv(B.COMMIT_ENV, "abc1234")
    assert B._git_commit() == "abc1234"


def test_the_ledger_runs_after_every_chapter_it_reads() -> None:
    # the robustness chapter's training-seed replicates come after the ledger in book order; the ledger
    # must still see them when both run in one invocation
    from layerwise.book import chapters as CH

    known = CH.discover_chapters(REPO / "notebooks")
    assert CH.select_chapters(known, None)[-1] == "08_claims_ledger"
    assert CH.select_chapters(known, ["08", "10"]) == ["10_robustness", "08_claims_ledger"]
    assert CH.select_chapters(known, ["01", "03"]) == ["01_layer_similarity", "03_layer_skipping"]
