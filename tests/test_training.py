"""The triplet's training: end to end on CPU, attention direction, resumption, metadata, errors.

Uses the ``test`` preset (2 layers, d 32, 40 steps of 8 x 32 tokens) so the file stays fast.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from layerwise import data as D
from layerwise import training as T
from layerwise.config import LayerwiseError
from layerwise.models import META_FILE, Family, load
from layerwise.subjects import load_subjects

PRESET = T.get_preset("test")
pytestmark = pytest.mark.slow  # trains (on CPU, in seconds): still part of CI


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def td(cache: Path) -> D.TrainData:
    return D.prepare(PRESET.data, cache_dir=cache, progress=False)


@pytest.fixture(scope="module")
def triplet(cache: Path, td: D.TrainData) -> dict[str, Path]:
    return T.ensure_triplet("test", cache_dir=cache, device="cpu", progress=False)


def _meta(p: Path) -> dict:
    return json.loads((p / META_FILE).read_text())


def test_triplet_trains_end_to_end_and_losses_fall(triplet: dict[str, Path], td: D.TrainData) -> None:
    assert list(triplet) == ["ar", "dlm", "ar2dlm"]
    metas = {o: _meta(p) for o, p in triplet.items()}
    for o, p in triplet.items():
        log = T.read_log(p)
        losses = [r["loss"] for r in log]
        assert all(math.isfinite(x) for x in losses)
        assert metas[o]["complete"] and metas[o]["objective"] == o
        # the trained model beats the same architecture at its (shared) initialisation on held-out data
        init = T.init_model(PRESET, td.tokenizer, o)
        val0 = T.validation_loss(o, init, td.tokenizer, PRESET, torch.device("cpu"))
        assert metas[o]["val_loss"] < val0 - 0.3, (o, metas[o]["val_loss"], val0)
        if o != "ar2dlm":  # ar2dlm has only 10 noisy steps; its check is the held-out loss above
            k = 3
            assert sum(losses[-k:]) / k < sum(losses[:k]) / k - 0.3, (o, losses)
    # same total budget, same data, same config; ar2dlm's own share is the last 25%
    assert len({m["tokens_seen"] for m in metas.values()}) == 1
    assert metas["ar2dlm"]["own_tokens"] == metas["ar"]["tokens_seen"] - T.get_preset("test").branch_step * \
        PRESET.batch_size * PRESET.seq_len
    assert len({m["config_hash"] for m in metas.values()}) == 1
    assert len({m["data"]["order_digest"] for m in metas.values()}) == 1
    # ar2dlm's log continues the ar run's token axis from the branch point
    assert T.read_log(triplet["ar2dlm"])[0]["tokens"] > T.read_log(triplet["ar"])[-1]["tokens"] * 0.75


def test_same_initial_weights_for_all_objectives(td: D.TrainData) -> None:
    sds = [T.init_model(PRESET, td.tokenizer, o).state_dict() for o in T.OBJECTIVES]
    for sd in sds[1:]:
        assert all(torch.equal(sd[k], sds[0][k]) for k in sds[0])
    other = T.init_model(T.get_preset("test", seed=1), td.tokenizer, "ar").state_dict()
    assert not torch.equal(other["model.layers.0.mlp.up_proj.weight"], sds[0]["model.layers.0.mlp.up_proj.weight"])


def test_ar2dlm_starts_from_the_ar_snapshot_at_the_branch_point(triplet: dict[str, Path]) -> None:
    snap = triplet["ar"] / "snapshots" / f"step_{PRESET.branch_step}"
    assert _meta(snap)["global_step"] == PRESET.branch_step == round(0.75 * PRESET.total_steps)
    snaps = sorted(int(p.name.split("_")[1]) for p in (triplet["ar"] / "snapshots").iterdir())
    assert snaps == PRESET.snapshot_steps() and snaps[-1] == PRESET.total_steps
    assert _meta(triplet["ar2dlm"])["steps"] == PRESET.total_steps - PRESET.branch_step
    w_snap = load_file(snap / "model.safetensors")
    w_final = load_file(triplet["ar2dlm"] / "model.safetensors")
    w_dlm = load_file(triplet["dlm"] / "model.safetensors")
    key = "model.layers.1.self_attn.q_proj.weight"
    # a few steps from the snapshot stay much closer to it than an independently trained dlm
    assert (w_final[key] - w_snap[key]).norm() < (w_dlm[key] - w_snap[key]).norm()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_dlm_position0_sees_the_last_token_and_ar_does_not(triplet: dict[str, Path], attn: str) -> None:
    from transformers import LlamaForCausalLM

    ids = D.eval_sequences(_tok(triplet), "test", 1, 16)
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 7) % 200
    for o, bidirectional in [("ar", False), ("dlm", True), ("ar2dlm", True)]:
        m = LlamaForCausalLM.from_pretrained(triplet[o], attn_implementation=attn).eval()
        assert m.config.is_causal is (not bidirectional)
        with torch.no_grad():
            a, b = m(ids).logits[0, 0], m(changed).logits[0, 0]
        assert (not torch.allclose(a, b, atol=1e-6)) is bidirectional, (o, attn)


def _tok(triplet: dict[str, Path]):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(triplet["ar"])


def test_checkpoints_load_through_models_and_subjects(triplet: dict[str, Path], cache: Path) -> None:
    lm = load(str(triplet["ar2dlm"]), device="cpu")
    assert lm.family is Family.AR2DLM and lm.spec.shifted_logits
    assert lm.spec.mask_token_id == lm.tokenizer.mask_token_id is not None
    subj = load_subjects([], "test", cache_dir=cache, device="cpu", progress=False)
    assert list(subj) == ["ar", "dlm", "ar2dlm"]
    assert [s.family for s in subj.values()] == [Family.AR, Family.DLM, Family.AR2DLM]
    assert subj["dlm"].model.config.is_causal is False and subj["ar"].model.config.is_causal is True
    threads = torch.get_num_threads()
    try:
        by_path = load_subjects([str(triplet["dlm"])], "test", device="cpu", cpu_threads=1)
        assert torch.get_num_threads() == 1  # cpu_threads applies on the CPU
    finally:
        torch.set_num_threads(threads)
    assert list(by_path) == [str(triplet["dlm"])] and by_path[str(triplet["dlm"])].family is Family.DLM
    # cached: ensure_triplet does not retrain (the log is untouched)
    before = (triplet["ar"] / "train_log.jsonl").read_bytes()
    T.ensure_triplet("test", cache_dir=cache, progress=False)
    assert (triplet["ar"] / "train_log.jsonl").read_bytes() == before


def test_killed_and_resumed_run_matches_uninterrupted(tmp_path: Path, td: D.TrainData) -> None:
    p = T.get_preset("test", tokens=14 * 8 * 32, ckpt_every=4, log_every=1)
    full = T.train("dlm", p, cache_dir=tmp_path / "a", progress=False, train_data=td, device="cpu")
    part = T.train("dlm", p, cache_dir=tmp_path / "b", progress=False, train_data=td, device="cpu", stop_after=6)
    assert not part.complete and part.steps == 6
    # a killed job may have logged past its last checkpoint: fake such lines, they must be dropped
    with (part.path / "train_log.jsonl").open("a") as f:
        f.write(json.dumps({"step": 7, "loss": 99.0}) + "\n")
    resumed = T.train("dlm", p, cache_dir=tmp_path / "b", progress=False, train_data=td, device="cpu")
    assert resumed.complete and resumed.steps == full.steps == p.total_steps
    # an overridden budget trains into its own folder, never over the registered preset's
    assert full.path.parent.name == f"test-{p.config_hash()[:8]}"
    ma, mb = _meta(full.path), _meta(resumed.path)
    assert ma["data"]["order_digest"] == mb["data"]["order_digest"]
    assert [r["step"] for r in T.read_log(full.path)] == [r["step"] for r in T.read_log(resumed.path)]
    assert [r["loss"] for r in T.read_log(full.path)] == [r["loss"] for r in T.read_log(resumed.path)]
    wa, wb = load_file(full.path / "model.safetensors"), load_file(resumed.path / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_errors_name_the_fix(tmp_path: Path, td: D.TrainData) -> None:
    with pytest.raises(LayerwiseError, match="unknown objective"):
        T.train("gpt", "test", cache_dir=tmp_path)
    with pytest.raises(LayerwiseError, match="unknown preset"):
        T.ensure_triplet("huge", cache_dir=tmp_path)
    with pytest.raises(LayerwiseError, match="unknown preset field"):
        T.get_preset("test", n_layer=3)
    with pytest.raises(LayerwiseError, match="train objective 'ar' first"):
        T.train("ar2dlm", "test", cache_dir=tmp_path, train_data=td, progress=False)
    with pytest.raises(LayerwiseError, match="multiple of micro_batch"):
        T.get_preset("test", micro_batch=3)
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    no_mask = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(td.tokenizer.backend_tokenizer.to_str()),
                                      eos_token=D.EOT, pad_token=D.PAD)
    bad = D.TrainData(td.spec, no_mask, td.text_rows, td.arith_rows, td.info)
    with pytest.raises(LayerwiseError, match="no mask token"):
        T.train("dlm", "test", cache_dir=tmp_path, train_data=bad, progress=False)


def test_cli_reports_the_cached_triplet(triplet: dict[str, Path], cache: Path, capsys) -> None:
    T.main(["--preset", "test", "--objective", "all", "--cache-dir", str(cache), "--no-progress"])
    out = capsys.readouterr().out
    assert all(f"{o}: {triplet[o]}" in out for o in T.OBJECTIVES)


@pytest.mark.parametrize("objective", ["ar", "dlm", "ar2dlm"])
def test_compiled_cross_entropy_matches_eager(td: D.TrainData, objective: str) -> None:
    # the training step's compiled CE (fused fp32 upcast) gives the eager loss and gradients
    model = T.init_model(PRESET, td.tokenizer, objective)
    ids = td.batch(0, 4)
    out = {}
    for compiled in (False, True):
        model.zero_grad()
        gen = torch.Generator().manual_seed(0)
        loss = T.objective_loss(objective, model, ids, td.tokenizer.mask_token_id, PRESET.eps, gen, compiled)
        loss.backward()
        out[compiled] = (loss.detach(), model.lm_head.weight.grad.clone())
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-4, atol=1e-6)
    assert out[False][0] > 1.0  # a real loss at initialisation (~log V), not a degenerate zero


@pytest.mark.parametrize("objective", ["ar", "dlm"])
def test_flash_sdpa_under_compile_drops_the_traced_mask(objective):
    """Under dynamo, transformers hands SDPA a materialised all-true mask (no flash kernel); inside
    ``flash_sdpa_under_compile`` the same call passes no mask and the right ``is_causal``, with
    identical logits. ``is_tracing`` is forced on to stand in for a compiled trace."""
    from unittest import mock

    from transformers import masking_utils as mu

    from layerwise.training import flash_sdpa_under_compile

    tok = D.train_tokenizer(["What is 12 + 34? Answer: 46"] * 40, 300)
    model = T.init_model(T.get_preset("test"), tok, objective).eval()
    ids = torch.randint(3, len(tok), (2, 12))
    originals = (mu._ignore_causal_mask_sdpa, mu._ignore_bidirectional_mask_sdpa)
    seen: list[tuple[bool, bool]] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kw):
        seen.append((attn_mask is None, is_causal))
        return sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kw)

    with torch.no_grad(), mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", spy):
        ref = model(input_ids=ids).logits
        with mock.patch.object(mu, "is_tracing", lambda *a, **k: True):
            seen.clear()
            traced = model(input_ids=ids).logits
            assert seen[0][0] is False  # transformers' own behaviour when traced: a mask, hence no flash
            seen.clear()
            with flash_sdpa_under_compile():
                fast = model(input_ids=ids).logits
    assert seen[0] == (True, objective == "ar")
    torch.testing.assert_close(traced, ref)
    torch.testing.assert_close(fast, ref)
    # the patch is undone on exit
    assert (mu._ignore_causal_mask_sdpa, mu._ignore_bidirectional_mask_sdpa) == originals


def test_compile_for_training_matches_eager() -> None:
    """The compiled forward that training uses (mask skip under dynamo) gives the eager logits for a
    bidirectional model: the skipped mask is all-true, so attention is unchanged."""
    tok = D.train_tokenizer(["What is 12 + 34? Answer: 46"] * 40, 300)
    model = T.init_model(T.get_preset("test"), tok, "dlm").eval()
    ids = torch.randint(3, len(tok), (2, 16))
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        got = T.compile_for_training(model)(input_ids=ids).logits
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


# -- training seeds and extra branch points ----------------------------------------------------


def _digest(td: D.TrainData, p: T.Preset) -> str:
    """The order digest a run of ``p`` must record, recomputed from the rows it should read."""
    view, digest = T.ordered(td, p), D._sha("order", p.seed)
    for s in range(p.total_steps):
        digest = D._sha(digest, view.indices(s * p.batch_size, p.batch_size).tobytes())[:32]
    return digest


def test_training_seed_sets_init_order_and_folder_on_the_same_data(
        triplet: dict[str, Path], cache: Path, td: D.TrainData) -> None:
    p1 = T.get_preset("test", seed=1)
    assert p1.data == PRESET.data  # the training seed leaves the data (corpus, tokenizer, rows) alone
    assert T.ordered(td, PRESET) is td  # seed 0 reads the order every preset has always used
    o0, o1 = td.indices(0, td.n_rows), T.ordered(td, p1).indices(0, td.n_rows)
    assert not (o0 == o1).all() and sorted(o0) == sorted(o1)  # another order of the same rows
    run1 = T.train("ar", p1, cache_dir=cache, progress=False, train_data=td, device="cpu")
    assert run1.path == cache / "triplet" / "test-seed1" / "ar" != triplet["ar"]
    m0, m1 = _meta(triplet["ar"]), _meta(run1.path)
    # each run read the rows of its own seed's order, step by step
    assert m0["data"]["order_digest"] == _digest(td, PRESET)
    assert m1["data"]["order_digest"] == _digest(td, p1) != m0["data"]["order_digest"]
    assert m1["seed"] == 1 and m1["data"]["tokenizer_sha"] == m0["data"]["tokenizer_sha"]
    w0, w1 = load_file(triplet["ar"] / "model.safetensors"), load_file(run1.path / "model.safetensors")
    assert not torch.equal(w0["model.embed_tokens.weight"], w1["model.embed_tokens.weight"])
    # an overridden preset keeps its hash folder, and the seed is appended to it
    assert T.triplet_dir(T.get_preset("test", lr=5e-3, seed=2), cache).name == \
        f"test-{T.get_preset('test', lr=5e-3).config_hash()[:8]}-seed2"
    with pytest.raises(LayerwiseError, match="non-negative"):
        T.get_preset("test", seed=-1)


def test_extra_branch_point_trains_from_the_ar_snapshot(triplet: dict[str, Path], cache: Path,
                                                         td: D.TrainData) -> None:
    p = T.get_preset("test", branch_fracs=(0.25,))
    assert p.config_hash() == PRESET.config_hash()  # which branches exist does not change any run
    assert T.run_names(p) == ["ar", "dlm", "ar2dlm", "ar2dlm_b25"]
    before = {o: (triplet[o] / "train_log.jsonl").read_bytes() for o in triplet}
    paths = T.ensure_triplet(p, cache_dir=cache, device="cpu", progress=False, objectives=T.run_names(p))
    assert list(paths) == T.run_names(p) and paths["ar2dlm"] == triplet["ar2dlm"]
    assert all((triplet[o] / "train_log.jsonl").read_bytes() == before[o] for o in triplet)  # not retrained
    b25 = _meta(paths["ar2dlm_b25"])
    step25 = p.step_at(0.25)
    assert b25["objective"] == "ar2dlm" and b25["run"] == "ar2dlm_b25" and b25["branch_frac"] == 0.25
    assert b25["init"] == f"ar snapshot at step {step25}" and b25["steps"] == p.total_steps - step25
    assert b25["tokens_seen"] == _meta(triplet["ar"])["tokens_seen"]
    assert b25["data"]["order_digest"] == _meta(triplet["ar"])["data"]["order_digest"]
    # its snapshots follow the shared step axis after the branch point
    snaps = sorted(int(d.name.split("_")[1]) for d in (paths["ar2dlm_b25"] / "snapshots").iterdir())
    assert snaps == [s for s in p.snapshot_steps() if s > step25]
    # it starts from the ar snapshot at 25%: it stays closer to it than the dlm trained from scratch
    key = "model.layers.1.self_attn.q_proj.weight"
    w = {n: load_file(paths[n] / "model.safetensors")[key] for n in ("dlm", "ar2dlm", "ar2dlm_b25")}
    w25 = load_file(triplet["ar"] / "snapshots" / f"step_{step25}" / "model.safetensors")[key]
    assert (w["ar2dlm_b25"] - w25).norm() < (w["dlm"] - w25).norm()
    assert not torch.equal(w["ar2dlm_b25"], w["ar2dlm"])
    assert load(str(paths["ar2dlm_b25"]), device="cpu").family is Family.AR2DLM
    # chapters read the trained branch runs beside the triplet only when asked (chapter 01's A6)
    assert list(load_subjects([], p, cache_dir=cache, device="cpu")) == ["ar", "dlm", "ar2dlm"]
    subj = load_subjects([], p, cache_dir=cache, device="cpu", branch_runs=True)
    assert list(subj) == T.run_names(p) and subj["ar2dlm_b25"].family is Family.AR2DLM
    # a branch point that is not trained is left out (never trained by a chapter)
    p40 = T.get_preset("test", branch_fracs=(0.25, 0.4))
    assert list(load_subjects([], p40, cache_dir=cache, device="cpu", branch_runs=True)) == T.run_names(p)
    # a branch point the finished ar run did not keep a snapshot of
    with pytest.raises(LayerwiseError, match="finished without that branch point"):
        T.train("ar2dlm_b40", PRESET, cache_dir=cache, train_data=td, progress=False, device="cpu")


def test_branch_points_are_checked() -> None:
    with pytest.raises(LayerwiseError, match="decay phase"):
        T.get_preset("test", branch_fracs=(0.9,))
    with pytest.raises(LayerwiseError, match="whole percent"):
        T.get_preset("test", branch_fracs=(0.255,))
    assert T.parse_run("ar2dlm_b25") == (T.Objective.AR2DLM, 0.25)
    assert T.run_name("ar2dlm", 0.75, PRESET) == "ar2dlm" and T.run_name("ar2dlm", 0.5, PRESET) == "ar2dlm_b50"
    with pytest.raises(LayerwiseError, match="unknown objective"):
        T.parse_run("ar2dlm_x")
