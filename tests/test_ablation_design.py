"""Chapter 05's testable design: outlier definitions and sites, prompt selection, its claim metrics,
its findings paragraph; on constructed tables with known answers and on a tiny random model."""

from __future__ import annotations

import json
import types

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from layerwise import claims
from layerwise.ablation import run_conditions
from layerwise.ablation_design import (
    chapter_05_findings,
    condition_means,
    labels_in,
    mark_loops,
    plan_ablations,
    run_screened,
    select_prompts,
    subset,
    with_groups,
)
from layerwise.config import LayerwiseError
from layerwise.models import wrap
from layerwise.probes import channel_stats
from layerwise.results import save_result

pytestmark = pytest.mark.usefixtures("one_thread")


def fake_stats(attn_top: int, resid_top: int, d: int = 16, L: int = 6) -> dict:
    """Channel statistics of both sites whose largest channel is ``attn_top`` / ``resid_top``."""
    def site(top: int) -> types.SimpleNamespace:
        mx = np.tile(np.arange(d, 0, -1, dtype=float), (L, 1))  # channel 0 largest, then 1, ...
        mx[:, top] = 100.0
        return types.SimpleNamespace(max_abs=mx, super_outlier=top)
    return {"attn_input": site(attn_top), "residual": site(resid_top)}


def test_plan_keeps_one_target_when_the_definitions_agree_and_both_when_not():
    agree = plan_ablations(fake_stats(5, 5), 6, n_draws=2, seed=0)
    assert agree.targets == {"attn_input": 5} and agree.same_channel == {"residual": "attn_input"}
    assert agree.n_early == 2
    # baseline + 2 sites x 1 target x 2 scopes x (outlier + 2 controls)
    assert len(agree.conditions) == 1 + 2 * 1 * 2 * 3
    differ = plan_ablations(fake_stats(5, 9), 6, n_draws=2, seed=0)
    assert differ.targets == {"attn_input": 5, "residual": 9} and not differ.same_channel
    assert len(differ.conditions) == 1 + 2 * 2 * 2 * 3
    assert set(differ.controls) == {"attn_input/attn_input", "attn_input/residual", "residual/attn_input",
                                    "residual/residual"}
    for lab, ctrl in differ.controls.items():
        assert differ.targets[lab.split("/")[1]] not in ctrl and len(ctrl) == 2
    early = [c for c in differ.conditions if c.scope == "early"]
    assert all(c.layers == (0, 1) for c in early)
    names = [c.name for c in differ.conditions]
    assert len(set(names)) == len(names) and "residual/attn_input/outlier/early" in names
    one = plan_ablations(fake_stats(5, 9), 6, sites=["residual"], definitions=["attn_input"], scopes=["all"])
    assert [c.name for c in one.conditions if c.kind == "outlier"] == ["residual/attn_input/outlier/all"]
    for bad in (dict(sites=["mlp"]), dict(definitions=[]), dict(scopes=["late"])):
        with pytest.raises(LayerwiseError):
            plan_ablations(fake_stats(5, 9), 6, **bad)


def table(base: list[float], outlier: list[float], controls: list[list[float]], *, model: str = "m",
          site: str = "attn_input", definition: str = "attn_input", scope: str = "early") -> pd.DataFrame:
    """A run_conditions-like table of one model: rep_2 per prompt for each condition."""
    rows = [dict(kind="none", scope="", draw=None, site="", definition="", prompt_id=p, rep_2=v)
            for p, v in enumerate(base)]
    rows += [dict(kind="outlier", scope=scope, draw=None, site=site, definition=definition, prompt_id=p, rep_2=v)
             for p, v in enumerate(outlier)]
    rows += [dict(kind="control", scope=scope, draw=k, site=site, definition=definition, prompt_id=p, rep_2=v)
             for k, c in enumerate(controls) for p, v in enumerate(c)]
    df = pd.DataFrame(rows).assign(model=model, loop_frac=lambda x: x.rep_2, correct=0.0)
    return df.assign(condition=df.kind + "/" + df.scope + "/" + df.draw.astype(str))


def test_select_prompts_reads_the_unablated_rows_only():
    df = table([0.0, 0.5, 0.1, np.nan, 0.3], [0.0] * 5, [[0.9] * 5])
    s = select_prompts(df, measure="rep_2", threshold=0.2, min_prompts=2)
    assert s.prompt_ids == (0, 2) and s.n_pool == 5 and s.testable and s.reason == ""
    few = select_prompts(df, threshold=0.2, min_prompts=3)
    assert not few.testable and "only 2 of 5 prompts" in few.reason and "at least 3" in few.reason
    assert json.loads(json.dumps(few.to_dict()))["testable"] is False
    with pytest.raises(LayerwiseError):
        select_prompts(df, measure="rep_9")
    with pytest.raises(LayerwiseError):
        select_prompts(df[df.kind != "none"])
    looped = mark_loops(df, threshold=0.3)
    base = looped[looped.kind == "none"].looping
    assert base.iloc[[0, 1, 2, 4]].tolist() == [0.0, 1.0, 0.0, 1.0] and np.isnan(base.iloc[3])


def _two_labels() -> pd.DataFrame:
    """Prompts 0-3 do not loop unablated, 4-7 do. On 0-3 the attention-input ablation raises rep_2 by
    0.5 over the controls, on 4-7 it lowers it by 0.4; the residual ablation equals its controls."""
    base = [0.05] * 4 + [0.8] * 4
    attn = table(base, [0.6] * 4 + [0.4] * 4, [[0.1] * 4 + [0.8] * 4, [0.1] * 4 + [0.8] * 4])
    resid = table(base, [0.3] * 8, [[0.3] * 8, [0.3] * 8], site="residual")
    return pd.concat([attn, resid[resid.kind != "none"]], ignore_index=True)


def test_testable_metrics_use_the_non_looping_prompts_against_the_control():
    df = _two_labels()
    sel = select_prompts(df, threshold=0.2, min_prompts=3)
    assert sel.prompt_ids == (0, 1, 2, 3)
    m = claims.testable_ablation_metrics(df, df, {"m": "dlm"}, selections={"m": sel}, scopes=("early",),
                                         n_boot=200, targets={"m": {"attn_input": 7}})
    head = m[claims.REPETITION_INCREASE.of("dlm")]
    assert head is m[claims.REPETITION_INCREASE.per_model("m", "early")]
    assert head.value == pytest.approx(0.5) and head.meaningful and head.extra["n_prompts"] == 4
    assert "channel 7" in head.note
    onset = m[claims.LOOP_ONSET.per_model("m", "early")]  # every selected prompt reaches 0.2 only when ablated
    assert onset.value == pytest.approx(1.0)
    alt = m[claims.definition(claims.REPETITION_INCREASE.per_model("m", "early"), "residual/attn_input")]
    assert alt.value == pytest.approx(0.0) and alt.extra["site"] == "residual"
    assert claims.definition(claims.REPETITION_INCREASE.of("dlm"), "residual/attn_input") in m
    assert m[claims.NONLOOPING_PROMPTS.per_model("m")].value == 4
    # on all prompts (paper B's design) the same ablation looks harmless: +0.5 and -0.4 average out
    everything = claims.ablation_difference(subset(df, "attn_input", "attn_input"), measure="rep_2", scope="early",
                                            n_boot=200)
    assert everything.value == pytest.approx(0.05)


def test_a_definition_that_picks_the_same_channel_is_written_under_its_own_label_too():
    """When the residual-stream definition picks the attention-input definition's channel, the chapter
    ablates once, and the file still holds the residual definition's labels (so that seeds on which
    the two definitions differ combine with this one)."""
    df = _two_labels()
    sel = select_prompts(df, threshold=0.2, min_prompts=3)
    m = claims.testable_ablation_metrics(df, df, {"m": "dlm"}, selections={"m": sel}, scopes=("early",),
                                         n_boot=200, same_channel={"m": {"residual": "attn_input"}})
    rep = claims.REPETITION_INCREASE
    alias = m[claims.definition(rep.of("dlm"), "attn_input/residual")]
    assert alias is m[rep.of("dlm")] and alias.value == pytest.approx(0.5)
    assert alias.extra["label"] == "attn_input/attn_input"  # the ablation that ran
    resid = m[claims.definition(rep.per_model("m", "early"), "residual/residual")]
    assert resid is m[claims.definition(rep.per_model("m", "early"), "residual/attn_input")]
    assert resid.value == pytest.approx(0.0)
    plain = claims.testable_ablation_metrics(df, df, {"m": "dlm"}, selections={"m": sel}, scopes=("early",), n_boot=200)
    assert claims.definition(rep.of("dlm"), "attn_input/residual") not in plain
    assert len(claims.metrics_table(m)) == len(claims.metrics_table(plain))  # tables show each ablation once


def test_too_few_non_looping_prompts_make_the_text_metrics_not_testable():
    df = _two_labels()
    sel = select_prompts(df, threshold=0.2, min_prompts=6)
    m = claims.testable_ablation_metrics(df, df, {"m": "dlm"}, selections={"m": sel}, scopes=("early",),
                                         n_boot=200)
    head = m[claims.REPETITION_INCREASE.of("dlm")]
    assert head.meaningful is False and "only 4 of 8 prompts" in head.extra["reason"]
    assert head.value == pytest.approx(0.5)  # still shown
    assert m[claims.ACCURACY_CHANGE.of("dlm")].meaningful  # arithmetic does not depend on the selection
    none = select_prompts(df, threshold=0.01, min_prompts=1)
    m0 = claims.testable_ablation_metrics(df, df, {"m": "dlm"}, selections={"m": none}, scopes=("early",),
                                          n_boot=200)
    assert m0[claims.REPETITION_INCREASE.of("dlm")].value is None
    assert not m0[claims.REPETITION_INCREASE.of("dlm")].meaningful


def test_mixed_sites_are_refused_by_the_plain_effect():
    with pytest.raises(LayerwiseError, match="subset"):
        claims.ablation_difference(_two_labels(), measure="rep_2", scope="early")


def test_findings_paragraph_for_testable_and_untestable_models(tmp_path):
    df = _two_labels()
    a, b = df.assign(model="a"), df.assign(model="b")
    both = pd.concat([a, b], ignore_index=True)
    sels = {"a": select_prompts(a, threshold=0.2, min_prompts=3), "b": select_prompts(b, threshold=0.2, min_prompts=6)}
    m = claims.testable_ablation_metrics(both, both, {"a": "dlm", "b": "dlm"}, selections=sels, scopes=("early",),
                                         n_boot=200)
    path = save_result("05_outlier_ablation", profile="t", results_dir=tmp_path, metrics=m, data={
        "selection": {n: s.to_dict() for n, s in sels.items()},
        "plans": {"a": {"targets": {"attn_input": 7}, "same_channel": {}}, "b": {"targets": {"attn_input": 3}}},
        "params": {"headline_metric": "rep_2", "headline_scope": "early"},
        "all_prompts_effects": [{"model": "a", "kind": "repetition", "scope": "early", "value": 0.05,
                                 "ci_low": -0.1, "ci_high": 0.2, "n_prompts": 8}]})
    text = chapter_05_findings(json.loads(path.read_text()))
    a_line = next(line for line in text.splitlines() if line.startswith("- `a`"))
    b_line = next(line for line in text.splitlines() if line.startswith("- `b`"))
    assert "4 of 8 prompts" in a_line and "+0.500" in a_line and "more loops than the control" in a_line
    assert "at the residual stream with the attn_input definition +0.000" in a_line
    assert "no difference from the control resolved" in a_line
    assert "Without the selection (the first 8 prompts" in a_line and "+0.050 [-0.100, +0.200]" in a_line
    assert "**Not testable**" in b_line and "at least 6" in b_line and "Without the selection" not in b_line
    assert "regression" not in text and "biased upward" in text
    assert "- **B2**" in text  # the ledger's verdict on the same metrics
    assert "No model was ablated" in chapter_05_findings({"metrics": {}, "data": {}})


def test_condition_means_on_the_selected_prompts():
    df = mark_loops(_two_labels(), threshold=0.2)
    sel = {"m": select_prompts(df, threshold=0.2)}
    t = condition_means(df, sel, ["rep_2", "looping"]).set_index(["label", "group"])
    assert t.loc[("attn_input/attn_input", "outlier/early"), "rep_2"] == pytest.approx(0.6)
    assert t.loc[("residual/attn_input", "control/early"), "rep_2"] == pytest.approx(0.3)
    assert t.loc[("-", "none"), "looping"] == 0.0 and (t.n_prompts == 4).all()
    assert labels_in(df) == ["attn_input/attn_input", "residual/attn_input"]
    capped = select_prompts(df, threshold=0.2, min_prompts=3, max_prompts=2)
    assert capped.prompt_ids == (0, 1) and capped.qualifying == 4 and not capped.testable
    assert "only 4 of 8" in capped.reason


@pytest.mark.parametrize("dtype", [object, "string[pyarrow]", "string[python]"])
def test_with_groups_labels_rows_for_every_string_dtype(dtype):
    df = pd.DataFrame({"kind": ["none", "outlier", "control"], "scope": ["", "early", "all"],
                       "site": ["", "residual", "residual"], "definition": ["", "attn_input", "residual"]},
                      dtype=dtype)
    g = with_groups(df)
    assert list(g.label) == ["-", "residual/attn_input", "residual/residual"]
    assert list(g.group) == ["none", "outlier/early", "control/all"]


def tiny_lm():
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=64, max_position_embeddings=64)
    return wrap(LlamaForCausalLM(cfg).eval(), None, "ar")


def test_plan_and_conditions_run_on_a_tiny_model():
    lm = tiny_lm()
    with torch.no_grad():  # a planted outlier in the residual stream: a large embedding channel
        lm.model.model.embed_tokens.weight[:, 11] += 40.0
    ids = torch.randint(0, 63, (4, 16), generator=torch.Generator().manual_seed(1))
    stats = channel_stats(lm, ids, where=["attn_input", "residual"])
    plan = plan_ablations(stats, lm.num_layers, n_draws=2, seed=0)
    resid_target = plan.targets.get("residual", plan.targets.get(plan.same_channel.get("residual", ""), -1))
    assert resid_target == 11
    seen: list[torch.Tensor] = []

    def gen(lm_, prompts, **kw):  # scores the model's last-position logits: one "word" per top token
        out = lm_.logits(ids[: len(prompts)])
        seen.append(out[:, -1])
        return [" ".join(str(int(t)) for t in o[-1].topk(4).indices) for o in out]

    df = run_conditions(lm, plan.conditions, ["p"] * 4, gen, progress=False)
    assert set(df.site) == {"", "attn_input", "residual"}
    assert set(labels_in(df)) == set(plan.controls)
    base, resid = seen[0], seen[[c.name for c in plan.conditions].index(
        f"residual/{next(iter(plan.targets))}/outlier/all")]
    assert not torch.allclose(base, resid)  # zeroing the residual stream's channel changes the outputs
    after = lm.logits(ids[:4])[:, -1]
    assert torch.equal(after, base)  # every hook removed


def test_run_screened_ablates_only_the_selected_prompts():
    plan = plan_ablations(fake_stats(5, 9), 6, n_draws=2, seed=0)
    calls: list[tuple[str, int]] = []
    prompts = ["loop loop loop loop", "a b c d", "x y x y x y", "e f g h", "i j k l"]

    def gen(lm_, ps, **kw):  # echoes the prompt: prompts 1, 3, 4 do not loop
        calls.append((ps[0], len(ps)))
        return list(ps)

    df, sel = run_screened(tiny_lm(), plan, prompts, gen, threshold=0.2, min_prompts=2, max_prompts=2,
                           compare_prompts=3, headline="residual/attn_input")
    assert sel.prompt_ids == (1, 3) and sel.qualifying == 3 and sel.testable
    assert calls[0] == (prompts[0], 5)  # one pass of the unmodified model over the pool
    ablated = df[df.kind != "none"]
    n_abl = len(plan.conditions) - 1
    per_prompt = ablated.groupby("prompt_id").condition.nunique()
    assert per_prompt[1] == per_prompt[3] == n_abl  # the selected prompts: every ablation
    head = [c for c in plan.conditions if c.site == "residual" and c.definition == "attn_input"]
    assert per_prompt[0] == per_prompt[2] == len(head)  # the comparison prompts: the headline label only
    assert 4 not in per_prompt and (df[df.prompt_id == 1].text == prompts[1]).all()


def test_mean_ablation_takes_each_sites_own_means():
    lm = tiny_lm()
    ids = torch.randint(0, 63, (2, 8), generator=torch.Generator().manual_seed(2))
    d, L = 32, lm.num_layers
    means = {"attn_input": torch.full((L, d), 3.0), "residual": torch.full((L, d), -5.0)}
    got: dict[str, torch.Tensor] = {}
    blk = lm.adapter.get_blocks(lm.model)[0]
    q = lm.adapter.block_linears(blk)["q"]
    hq = q.register_forward_pre_hook(lambda m, a: got.__setitem__("attn_input", a[0].detach().clone()))
    nxt = lm.adapter.get_blocks(lm.model)[1]  # block 0's output, as block 1 reads it

    def block1_input(_m, args, kwargs):
        got["residual"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    hb = nxt.register_forward_pre_hook(block1_input, with_kwargs=True)
    try:
        for site, value in (("attn_input", 3.0), ("residual", -5.0)):
            cond = [c for c in plan_ablations(fake_stats(4, 4, d=d, L=L), L, sites=[site], definitions=["attn_input"],
                                              n_draws=1, scopes=["all"]).conditions if c.kind == "outlier"]
            run_conditions(lm, cond, ["p"], lambda lm_, ps, **kw: [str(lm_.logits(ids[:1]).sum().item())],
                           mode="mean", means=means, progress=False)
            assert torch.all(got[site][..., 4] == value), site
        with pytest.raises(LayerwiseError, match="no entry for site"):
            run_conditions(lm, cond, ["p"], lambda lm_, ps, **kw: ["x"], mode="mean",
                           means={"attn_input": means["attn_input"]}, progress=False)
    finally:
        hq.remove()
        hb.remove()
