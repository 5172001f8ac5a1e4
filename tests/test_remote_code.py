"""The genuine LLaDA and Dream remote code by local folder: loading through ``load_subjects``, the
hashes of the files that run (tested or not), the refusal of unrecognised remote code, the errors for
bad input, and the chapters run through the book runner.

The checkpoints are tiny random-weight ones built at test time from ``../shared/remote_code``
(tests/remote_fixtures.py); tests that need them skip with the reason where it is absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from layerwise import models as M
from layerwise.arch import remote_code as RC
from layerwise.book import provenance
from layerwise.config import LayerwiseError
from layerwise.diffusion import Family
from layerwise.subjects import ModelEntry, load_subjects, model_entry
from remote_fixtures import REMOTE_CODE, chapter_checkpoint, needs_remote_code, tiny_tokenizer

#: the genuine files whose hashes the project records: stored name -> (hub name, architecture)
GENUINE = {"llada/modeling_llada.py": ("modeling_llada.py", "llada"),
           "llada/modeling_llada.hub-2025-06.py": ("modeling_llada.py", "llada"),
           "llada/configuration_llada.py": ("configuration_llada.py", "llada"),
           "dream/modeling_dream.py": ("modeling_dream.py", "dream"),
           "dream/configuration_dream.py": ("configuration_dream.py", "dream"),
           "dream/generation_utils.py": ("generation_utils.py", "dream")}


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, tok) -> dict[str, Path]:
    """Tiny checkpoints of the genuine code (4 layers, width 64, a 300-id tokenizer, 320 embedding rows)."""
    if not REMOTE_CODE.is_dir():
        pytest.skip(f"genuine LLaDA/Dream remote code not found at {REMOTE_CODE}")
    root = tmp_path_factory.mktemp("genuine")
    return {w: chapter_checkpoint(root / w, w, tokenizer=tok) for w in ("llada", "dream")}


def _copy(src: Path, dst: Path, drop: tuple[str, ...] = ()) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*drop) if drop else None)
    return dst


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def _untested(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, RC.UntestedRemoteCodeWarning)]


# -- the table of tested files ----------------------------------------------------------------------------


@needs_remote_code
def test_tested_table_holds_every_genuine_file():
    """Each genuine file's sha256 (what `sha256sum` prints) is in the table under its hub name."""
    for stored, (name, arch) in GENUINE.items():
        digest = hashlib.sha256((REMOTE_CODE / stored).read_bytes()).hexdigest()
        assert RC.sha256_of(REMOTE_CODE / stored) == digest
        t = RC.tested_file(digest)
        assert t is not None, stored
        assert (t.name, t.architecture) == (name, arch)
    assert len(RC.TESTED_FILES) == len(GENUINE)
    assert [t.name for t in RC.TESTED_FILES.values() if t.caveat] == ["modeling_llada.py"]  # the June 2025 file


# -- loading by local folder ------------------------------------------------------------------------------


@needs_remote_code
def test_load_subjects_genuine_folders(ckpts, tok):
    """Local folders of the genuine code load through load_subjects with no parameter but the folder (or a
    mapping entry naming it): the architecture, trust_remote_code and the transformers-5 fixes come from
    the config, the family and sampler defaults from the registered LLaDA / Dream, the mask id from
    config.json; the files that ran are the tested ones, so nothing warns."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        subj = load_subjects([str(ckpts["llada"]), {"id": str(ckpts["dream"]), "name": "dream"}], device="cpu")
    assert not _untested(record)
    assert list(subj) == [str(ckpts["llada"]), "dream"]
    for lm, which, fam, like in ((subj[str(ckpts["llada"])], "llada", Family.DLM, "GSAI-ML/LLaDA-8B-Base"),
                                 (subj["dream"], "dream", Family.AR2DLM, "Dream-org/Dream-v0-Base-7B")):
        assert (lm.adapter.name, lm.family, lm.num_layers) == (which, fam, 4)
        assert lm.spec.mask_token_id == tok.mask_token_id == json.loads((ckpts[which] / "config.json").read_text())[
            "mask_token_id"]
        assert lm.spec.sampler == M.REGISTRY[like].sampler
        assert type(lm.model).__module__.startswith("transformers_modules.")
        names = sorted(f.name for f in lm.remote_code)
        assert names == sorted({"llada": ["modeling_llada.py", "configuration_llada.py"],
                                "dream": ["modeling_dream.py", "configuration_dream.py", "generation_utils.py"]}[which])
        for f in lm.remote_code:
            assert f.tested is not None and f.sha256 == RC.sha256_of(REMOTE_CODE / which / f.name)
        ids = torch.tensor(tok(["Once upon a time, a little fox"])["input_ids"])
        with torch.no_grad():
            logits = lm.logits(ids)
        assert logits.shape == (1, ids.shape[1], 320) and torch.isfinite(logits).all()


@needs_remote_code
def test_download_of_a_registered_model_gets_its_facts(ckpts, tmp_path):
    """A folder that is a download of a registered model (hub-cache snapshot or --local-dir named as the
    model) gets that model's registry entry, but the mask id of its own config.json."""
    assert M.registered_id_of_folder(tmp_path / "models--GSAI-ML--LLaDA-8B-Base" / "snapshots" / "abc") == \
        "GSAI-ML/LLaDA-8B-Base"
    assert M.registered_id_of_folder(tmp_path / "dream-v0-instruct-7b") == "Dream-org/Dream-v0-Instruct-7B"
    assert M.registered_id_of_folder(tmp_path / "my-llada") is None
    d = _copy(ckpts["llada"], tmp_path / "LLaDA-8B-Instruct")
    lm = M.load(str(d), device="cpu")
    assert (lm.spec.variant, lm.spec.pair, lm.spec.dtype) == ("instruct", "GSAI-ML/LLaDA-8B-Base", "bfloat16")
    assert lm.spec.mask_token_id == lm.tokenizer.mask_token_id != M.REGISTRY["GSAI-ML/LLaDA-8B-Instruct"].mask_token_id
    assert next(lm.model.parameters()).dtype == torch.bfloat16


@needs_remote_code
def test_model_entries_set_family_mask_and_tokenizer(ckpts, tmp_path, tok):
    """A models entry may give the family, the mask id and the tokenizer's folder explicitly."""
    bare = _copy(ckpts["dream"], tmp_path / "bare", drop=("tokenizer*",))
    e = {"id": str(bare), "name": "d", "family": "dlm", "mask_token_id": 5, "tokenizer": str(ckpts["dream"])}
    lm = load_subjects([e], device="cpu")["d"]
    assert (lm.family, lm.spec.mask_token_id, len(lm.tokenizer)) == (Family.DLM, 5, len(tok))
    assert model_entry(e) == ModelEntry(str(bare), "d", "dlm", 5, None, str(ckpts["dream"]))
    assert model_entry(e).load_kwargs() == {"family": "dlm", "mask_token_id": 5, "tokenizer": str(ckpts["dream"])}
    assert model_entry(Path("x/y")) == ModelEntry("x/y")


# -- which code ran ---------------------------------------------------------------------------------------


@needs_remote_code
def test_untested_file_warns_before_it_runs(ckpts, tmp_path):
    """A modeling file the project has not tested: one warning line naming it, its hash and what to do;
    the loaded model and the provenance report it as not tested; once declared tested, no warning."""
    d = _copy(ckpts["llada"], tmp_path / "edited")
    src = d / "modeling_llada.py"
    src.write_text(src.read_text() + "\n# a local edit\n")
    digest = RC.sha256_of(src)
    with pytest.warns(RC.UntestedRemoteCodeWarning) as record:
        lm = M.load(str(d), device="cpu")
    msgs = _untested(record.list)
    assert len(msgs) == 1 and "\n" not in msgs[0]
    for part in ("modeling_llada.py", digest, "has not tested", "add_tested_file"):
        assert part in msgs[0], part
    assert {f.name: f.tested is None for f in lm.remote_code} == {"modeling_llada.py": True,
                                                                  "configuration_llada.py": False}
    row = provenance(models=[str(d)])["remote code"]
    assert f"modeling_llada.py sha256:{digest} (NOT tested by layerwise)" in row
    RC.add_tested_file(RC.TestedFile("modeling_llada.py", digest, "llada", "a local edit"))
    try:
        with warnings.catch_warnings(record=True) as again:
            warnings.simplefilter("always")
            M.load(str(d), device="cpu")
        assert not _untested(again)
    finally:
        del RC.TESTED_FILES[digest]


@needs_remote_code
def test_june_2025_llada_file_is_named_and_its_caveat_shown(ckpts, tmp_path, tok):
    """The two tested LLaDA modeling files differ in outputs: the June 2025 one ignores padding masks (a
    padded row differs from the row alone), the October 2025 one honours them; loading the June file says
    so, and the provenance names which one ran."""
    june = chapter_checkpoint(tmp_path / "june", "llada", tokenizer=tok, modeling="modeling_llada.hub-2025-06.py")
    with pytest.warns(RC.UntestedRemoteCodeWarning, match="ignores attention masks"):
        old = M.load(str(june), device="cpu")
    new = M.load(str(ckpts["llada"]), device="cpu")
    ids = torch.tensor(tok(["Once upon a time, a little fox ran home.", "The cat sat down."],
                           padding=True)["input_ids"])
    am = (ids != tok.pad_token_id).long()
    assert not am.all()
    n = int(am[1].sum())
    with torch.no_grad():
        for lm, honours in ((new, True), (old, False)):
            padded, alone = lm.logits(ids, am)[1, :n], lm.logits(ids[1:, :n])[0]
            assert torch.allclose(padded, alone, atol=1e-4) is honours
    june_hash = RC.sha256_of(REMOTE_CODE / "llada" / "modeling_llada.hub-2025-06.py")
    assert june_hash in provenance(models={"old": old})["remote code"]
    assert june_hash not in provenance(models={"new": new})["remote code"]


@needs_remote_code
def test_provenance_names_the_files_that_run(ckpts):
    """Every chapter's provenance cell (given ids before loading, or the loaded models) has a row naming
    each remote-code file with its sha256 and whether it is tested; the triplet's names add none."""
    row = provenance(profile="tiny", models=[str(ckpts["llada"]), {"id": str(ckpts["dream"]), "name": "dream"}])[
        "remote code"]
    for which, name in (("llada", "modeling_llada.py"), ("llada", "configuration_llada.py"),
                        ("dream", "modeling_dream.py"), ("dream", "generation_utils.py")):
        assert f"{name} sha256:{RC.sha256_of(REMOTE_CODE / which / name)} (tested)" in row
    assert row.index("modeling_llada") < row.index("dream: ")
    assert "remote code" not in provenance(models=["ar", "dlm", "ar2dlm"])


# -- refusing unrecognised remote code, bad input ---------------------------------------------------------


def _fancy(src: Path, dst: Path, sentinel: Path) -> Path:
    """A copy of the Dream checkpoint renamed to an architecture nobody registered; its modeling file
    touches ``sentinel`` when it runs."""
    d = _copy(src, dst)
    code = (d / "modeling_dream.py").read_text()
    (d / "modeling_fancy.py").write_text(f"open({str(sentinel)!r}, 'w').close()\n" + code)
    (d / "modeling_dream.py").unlink()
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(model_type="fancy", architectures=["FancyLM"],
               auto_map={"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_fancy.DreamModel"})
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@needs_remote_code
def test_unrecognised_remote_code_runs_only_when_trusted_or_registered(ckpts, tmp_path):
    """Remote code of an architecture nobody registered: refused before any of it runs, the error naming
    the supported architectures, how to add one and the parameter that runs it anyway. With
    trust_remote_code it runs (and, unpatched for transformers 5, fails with an error naming the fix);
    registered as an Architecture with Dream's fixes, it loads."""
    from layerwise import arch as A
    from layerwise.arch import dream

    sentinel = tmp_path / "it-ran"
    d = _fancy(ckpts["dream"], tmp_path / "fancy", sentinel)
    with pytest.raises(LayerwiseError) as e:
        load_subjects([str(d)], device="cpu")
    msg = _one_line(e)
    for part in ("not a supported architecture", "llada", "dream", "llama", "register_architecture",
                 "trust_remote_code: true"):
        assert part in msg, part
    assert not sentinel.exists()
    with pytest.warns(RC.UntestedRemoteCodeWarning, match="modeling_fancy.py"), pytest.raises(LayerwiseError) as e:
        load_subjects([{"id": str(d), "trust_remote_code": True, "family": "ar2dlm"}], device="cpu")
    assert sentinel.exists() and "register_architecture" in _one_line(e)
    fancy = A.Architecture(adapter=A.LayerAdapter(**{**dream.ADAPTER.__dict__, "name": "fancy"}),
                           model_types=("fancy",), remote_code=True, auto_class="AutoModel",
                           patches=dream.ARCHITECTURE.patches)
    A.register_architecture(fancy)
    try:
        lm = load_subjects([{"id": str(d), "family": "ar2dlm", "name": "f"}], device="cpu")["f"]
    finally:
        del A.ARCHITECTURES["fancy"], A.ADAPTERS["fancy"]
    assert lm.adapter is fancy.adapter and lm.family is Family.AR2DLM and lm.num_layers == 4


@needs_remote_code
def test_trust_remote_code_false_is_kept(ckpts, tmp_path):
    """trust_remote_code=False runs no checkpoint code, even in a process that already ran LLaDA's (whose
    model_type transformers then maps to the same classes without asking)."""
    M.load(str(ckpts["llada"]), device="cpu")
    sentinel = tmp_path / "it-ran"
    d = _copy(ckpts["llada"], tmp_path / "copy")
    src = d / "modeling_llada.py"
    src.write_text(f"open({str(sentinel)!r}, 'w').close()\n" + src.read_text())
    with pytest.raises(LayerwiseError) as e:
        load_subjects([{"id": str(d), "trust_remote_code": False}], device="cpu")
    assert "trust_remote_code=True" in _one_line(e) and not sentinel.exists()


def test_unknown_ids_and_folders(tmp_path, monkeypatch):
    """Each a one-line error naming the fix: an unknown hub id offline, a path that is no folder, a folder
    without config.json."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(LayerwiseError) as e:
        load_subjects(["nobody/no-such-model"], device="cpu")
    msg = _one_line(e)
    for part in ("neither a local folder nor in the local hub cache", "HF_HUB_OFFLINE",
                 "hf download nobody/no-such-model"):
        assert part in msg, part
    with pytest.raises(LayerwiseError) as e:
        M.load(str(tmp_path / "missing" / "model"))
    assert "no such folder" in _one_line(e)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.safetensors").write_bytes(b"")
    with pytest.raises(LayerwiseError) as e:
        load_subjects([str(tmp_path / "weights")], device="cpu")
    assert "has no config.json" in _one_line(e) and "model.safetensors" in str(e.value)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # online: what the hub said (not asked here)
    online = M._not_found("nobody/x", OSError("nobody/x is not a local folder and is not a valid model identifier"))
    assert "neither a local folder nor a model on the hub" in str(online) and "hf auth login" in str(online)


@needs_remote_code
def test_missing_tokenizer_and_bad_mask_ids(ckpts, tmp_path, tok):
    bare = _copy(ckpts["llada"], tmp_path / "bare", drop=("tokenizer*",))
    with pytest.raises(LayerwiseError) as e:
        load_subjects([str(bare)], device="cpu")
    msg = _one_line(e)
    assert "no tokenizer" in msg and "tokenizer.save_pretrained" in msg and "tokenizer: ID_OR_FOLDER" in msg
    with pytest.raises(LayerwiseError) as e:
        load_subjects([{"id": str(ckpts["llada"]), "mask_token_id": 100_000}], device="cpu")
    msg = _one_line(e)
    assert "mask token id 100000" in msg and "not in its vocabulary (320 embedding rows, 300 tokenizer ids)" in msg
    assert f"its tokenizer's mask token is {tok.mask_token_id}" in msg
    d = _copy(ckpts["dream"], tmp_path / "badmask")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "mask_token_id": 310}))  # an embedding row, not a token
    with pytest.raises(LayerwiseError, match="mask token id 310 .*from its config.json"):
        load_subjects([str(d)], device="cpu")


@pytest.mark.parametrize("entry, part", [
    ({"id": "x", "famly": "dlm"}, "unknown keys ['famly']"),
    ({"family": "dlm"}, "has no id"),
    ({"id": "x", "family": "diffusion"}, "family 'diffusion' is none of"),
    ({"id": "x", "mask_token_id": "5"}, "mask_token_id = '5' must be an integer"),
    ({"id": "x", "mask_token_id": True}, "must be an integer"),
    ({"id": "x", "trust_remote_code": "yes"}, "must be true or false"),
    (3, "must be a hub id, a folder or a mapping"),
])
def test_bad_model_entries(entry, part):
    with pytest.raises(LayerwiseError) as e:
        model_entry(entry)
    assert part in _one_line(e)


def test_models_parameter_accepts_entries():
    """The chapters' `models` parameter takes mappings besides ids (as the runner and papermill pass it)."""
    from layerwise.params import CommonParams, coerce

    given = "[GSAI-ML/LLaDA-8B-Base, {id: ./llada-sft, family: dlm, mask_token_id: 126336}]"
    models = coerce(given, CommonParams().models, "models")
    assert [model_entry(m) for m in models] == [ModelEntry("GSAI-ML/LLaDA-8B-Base"),
                                                ModelEntry("./llada-sft", family="dlm", mask_token_id=126336)]


# -- the chapters on the genuine code, through the runner ---------------------------------------------------

#: the smallest sizes that still run every code path of the chapters (each -p goes to the chapters declaring it)
CHAPTER_PARAMS = {
    "n_seqs": 4, "seq_len": 32, "batch_size": 4, "mask_ratios": "[0.0, 0.5]", "n_boot": 50,          # 01, 04
    "strategies": "[early, random]", "random_draws": 1, "max_skip": 1, "limit": 4, "gen_length": 8,  # 03, 07
    "diffusion_steps": 8, "mc_samples": 2, "influence_seqs": 2, "influence_len": 32,
    "n_groups": 2, "gen_prompts": 1, "prompt_len": 16, "block_length": 8,                            # 04
    "stat_seqs": 4, "stat_len": 32, "text_prompts": 2, "gen_tokens": 8, "arith_items": 2,            # 05
    "answer_tokens": 4, "n_draws": 1, "examples": 1,
    "bits": "[3]", "sparsities": "[0.5]", "prune_methods": "[wanda]",                                # 07
    "calib_seqs": 4, "calib_len": 32,
}


@pytest.mark.slow
@needs_remote_code
def test_chapters_run_on_genuine_remote_code(ckpts, tmp_path):
    """Chapters 01, 03, 04, 05 and 07 run through the book runner on both folders (chapter 01 reads
    Gutenberg text when models are given: it runs where the data directory is available)."""
    chapters = ["03", "04", "05", "07"]
    if os.environ.get("LAYERWISE_DATA_DIR") and Path(os.environ["LAYERWISE_DATA_DIR"]).is_dir():
        chapters.insert(0, "01")
    models = f"[{ckpts['llada']}, {ckpts['dream']}]"
    cmd = [sys.executable, "-m", "layerwise.book", "run", "--profile", "tiny", "--chapters", *chapters,
           "-p", f"models={models}", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
           "--no-progress", *[a for k, v in CHAPTER_PARAMS.items() for a in ("-p", f"{k}={v}")]]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    took = time.perf_counter() - t0
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    print(f"chapters {chapters} on the genuine LLaDA and Dream code: {took:.0f} s\n{run.stdout}")
    notebooks = sorted((tmp_path / "out" / "notebooks").glob("*.ipynb"))
    assert [p.name[:2] for p in notebooks] == chapters
    llada_hash = RC.sha256_of(REMOTE_CODE / "llada" / "modeling_llada.py")
    dream_hash = RC.sha256_of(REMOTE_CODE / "dream" / "modeling_dream.py")
    for nb in notebooks:
        text = nb.read_text()
        assert '"output_type": "error"' not in text, nb.name
        assert f"modeling_llada.py sha256:{llada_hash} (tested)" in text, nb.name  # the provenance cell
        assert f"modeling_dream.py sha256:{dream_hash} (tested)" in text, nb.name
    results = list((tmp_path / "cache" / "results" / "tiny").glob("*.json"))
    assert len(results) == len(chapters)
    for r in results:
        assert str(ckpts["llada"]) in r.read_text() and str(ckpts["dream"]) in r.read_text(), r.name


# -- hub ids (from a local hub cache, offline) and the native architectures by folder ------------------------


def _hub_cache(root: Path, repo: str, src: Path) -> None:
    """``src`` as the hub cache keeps a downloaded repo: models--ORG--NAME/{refs/main, snapshots/<commit>/}."""
    commit = hashlib.sha1(repo.encode()).hexdigest()
    d = root / f"models--{repo.replace('/', '--')}"
    (d / "refs").mkdir(parents=True)
    (d / "refs" / "main").write_text(commit)
    shutil.copytree(src, d / "snapshots" / commit)


_BY_HUB_ID = """
import json, warnings
from layerwise.book import provenance
from layerwise.subjects import load_subjects
ids = ["GSAI-ML/LLaDA-8B-Base", "Dream-org/Dream-v0-Instruct-7B"]
row = provenance(models=ids)["remote code"]
with warnings.catch_warnings(record=True) as rec:
    warnings.simplefilter("always")
    subj = load_subjects(ids, device="cpu")
print(json.dumps({"row": row, "warnings": [str(w.message) for w in rec if "NOT tested" in str(w.message)
                  or "has not tested" in str(w.message)],
                  **{k: [lm.adapter.name, lm.family.value, lm.spec.mask_token_id, lm.spec.pair, str(lm.model.dtype),
                         sorted((f.name, f.tested is not None) for f in lm.remote_code)] for k, lm in subj.items()}}))
"""


@needs_remote_code
def test_hub_ids_from_the_local_hub_cache(ckpts, tmp_path):
    """The registered hub ids of the genuine code, offline from a local hub cache, go through the same
    detection, trust_remote_code and fixes as a folder: registry facts (pair, dtype) plus the mask id of the
    checkpoint's config.json, the tested files hashed before loading (provenance) and after."""
    cache = tmp_path / "hub"
    _hub_cache(cache, "GSAI-ML/LLaDA-8B-Base", ckpts["llada"])
    _hub_cache(cache, "Dream-org/Dream-v0-Instruct-7B", ckpts["dream"])
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "mod")}
    run = subprocess.run([sys.executable, "-c", _BY_HUB_ID], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["warnings"] == []
    assert out["GSAI-ML/LLaDA-8B-Base"] == ["llada", "dlm", 2, "GSAI-ML/LLaDA-8B-Instruct", "torch.bfloat16",
                                            [["configuration_llada.py", True], ["modeling_llada.py", True]]]
    assert out["Dream-org/Dream-v0-Instruct-7B"] == [
        "dream", "ar2dlm", 2, "Dream-org/Dream-v0-Base-7B", "torch.bfloat16",
        [["configuration_dream.py", True], ["generation_utils.py", True], ["modeling_dream.py", True]]]
    for name in ("modeling_llada.py", "modeling_dream.py"):
        which = name[len("modeling_"):-3]
        assert f"{name} sha256:{RC.sha256_of(REMOTE_CODE / which / name)} (tested)" in out["row"]


def test_native_architectures_by_folder(tmp_path):
    """Downloads of the registered native models (Qwen2.5, Llama-3.1, DiffusionGemma) load by folder through
    the same detection: their registry facts, no remote code, the logits of the saved model."""
    from test_models import _ids, _llama, _qwen2, diffusion_gemma

    cases = [(_qwen2(), "Qwen2.5-7B-Instruct", "llama", Family.AR, "Qwen/Qwen2.5-7B"),
             (_llama(causal=True), "Llama-3.1-8B", "llama", Family.AR, "meta-llama/Llama-3.1-8B-Instruct"),
             (diffusion_gemma(), "diffusiongemma-26B-A4B-it", "diffusion_gemma", Family.DLM, None)]
    for model, folder, arch, fam, pair in cases:
        model.save_pretrained(tmp_path / folder)
        lm = M.load(str(tmp_path / folder), device="cpu", dtype="float32")
        assert (lm.adapter.name, lm.family, lm.spec.pair, lm.remote_code) == (arch, fam, pair, ()), folder
        assert provenance(models=[str(tmp_path / folder)])["remote code"] == f"{tmp_path / folder}: none"
        with torch.no_grad():
            torch.testing.assert_close(lm.logits(_ids()), lm.adapter.logits(model, _ids()))
