"""Triplet presets (data, architecture, budget, optimisation) and the model they build."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from .. import data as D
from ..config import LayerwiseError
from ..diffusion import Objective

#: H100 SXM dense bf16 peak (FLOP/s) used for MFU unless told otherwise
H100_BF16_PEAK = 989e12
#: H200 dense bf16 peak (FLOP/s), nominal: the same tensor cores as the H100 SXM (an 8192^3 bf16 matmul
#: measured 790e12 on the project's H200); MFU is reported against this nominal peak
H200_BF16_PEAK = 989e12


@dataclass(frozen=True)
class Preset:
    """A triplet configuration: data, architecture, budget and optimisation.

    ``batch_size`` is sequences per optimizer step; ``micro_batch`` splits it into gradient
    accumulation steps (results do not depend on it up to float rounding, so it is left out of the
    config hash, as are ``compile``, ``ckpt_every`` and ``log_every``).

    ``seed`` is the training seed: the initial weights, the order of the training rows and the
    masking noise. The corpus, tokenizer and arithmetic rows depend on ``data.seed`` only (override it
    as ``data_seed``), so the runs of several training seeds read the same data in different orders.
    ``branch_fracs``: extra ``ar2dlm`` branch points besides ``branch_frac``, each a run named
    ``ar2dlm_b<percent>`` (see :func:`~layerwise.training.run_name`); the ``ar`` run keeps a snapshot
    at every branch point. Which branches exist does not change how any run trains, so
    ``branch_fracs`` is left out of the config hash.
    """

    name: str
    data: D.DataSpec
    d_model: int
    n_layers: int
    n_heads: int
    d_mlp: int
    tokens: int  # training tokens per model
    batch_size: int
    micro_batch: int
    lr: float = 3e-3
    min_lr_frac: float = 0.1
    warmup_frac: float = 0.03
    decay_frac: float = 0.2
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eps: float = 1e-3  # LLaDA's minimum mask probability
    branch_frac: float = 0.75  # where ar2dlm branches off the ar run
    branch_fracs: tuple[float, ...] = ()  # extra branch points: runs ar2dlm_b<percent>
    snapshot_fracs: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    seed: int = 0
    compile: bool | Literal["auto"] = "auto"
    ckpt_every: int = 100
    log_every: int = 10
    val_seqs: int = 32
    #: torch CPU threads while training on CPU (None = leave as is). Small models run faster on one
    #: thread than on two busy-waiting OpenMP threads when the cores are shared (measured ~10x).
    cpu_threads: int | None = 1

    @property
    def seq_len(self) -> int:
        return self.data.seq_len

    @property
    def total_steps(self) -> int:
        return max(1, self.tokens // (self.batch_size * self.seq_len))

    @property
    def branch_step(self) -> int:
        return max(1, round(self.branch_frac * self.total_steps))

    def step_at(self, frac: float) -> int:
        """The global step at fraction ``frac`` of the budget (at least 1)."""
        return max(1, round(frac * self.total_steps))

    def branch_points(self) -> list[float]:
        """Every ar2dlm branch fraction: ``branch_frac`` first, then ``branch_fracs`` (no repeats)."""
        return list(dict.fromkeys([self.branch_frac, *self.branch_fracs]))

    def snapshot_steps(self) -> list[int]:
        steps = {self.step_at(f) for f in self.snapshot_fracs} | {self.step_at(f) for f in self.branch_points()}
        return sorted(steps)

    def config_hash(self) -> str:
        d = asdict(self)
        for k in ("micro_batch", "compile", "ckpt_every", "log_every", "cpu_threads", "branch_fracs"):
            d.pop(k)
        d["data"]["arith_digits"] = D.ARITH_DIGITS  # the arithmetic distribution shapes the training stream
        return D._sha(d)[:16]

    def validate(self) -> None:
        if self.batch_size % self.micro_batch:
            raise LayerwiseError(f"batch_size={self.batch_size} must be a multiple of micro_batch={self.micro_batch}")
        if self.d_model % self.n_heads:
            raise LayerwiseError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.seed < 0:
            raise LayerwiseError(f"seed={self.seed} must be a non-negative integer")
        if not 0 < self.branch_frac < 1:
            raise LayerwiseError(f"branch_frac={self.branch_frac} must be in (0, 1)")
        for f in self.branch_points():
            if not 0 < f < 1:
                raise LayerwiseError(f"branch fraction {f} must be in (0, 1): fix branch_fracs")
            if f != self.branch_frac and abs(f * 100 - round(f * 100)) > 1e-9:
                raise LayerwiseError(f"branch_fracs entry {f} must be a whole percent (e.g. 0.25): its run is "
                                     "named ar2dlm_b<percent>")
            if f > 1 - self.decay_frac:
                raise LayerwiseError(f"branch fraction {f} falls in the decay phase (last "
                                     f"{self.decay_frac:.0%}): lower decay_frac, branch_frac or branch_fracs")


PRESETS: dict[str, Preset] = {
    # the README default / CI / nbval: synthetic corpus, ~1 minute per model on 2 CPU cores
    "tiny": Preset(name="tiny", data=D.DataSpec(source="synthetic", vocab_size=512, seq_len=128,
                                                 synthetic_docs=4000, arith_frac=0.04,
                                                 tokenizer_train_bytes=500_000),
                   d_model=64, n_layers=4, n_heads=4, d_mlp=176, tokens=600_000, batch_size=16,
                   micro_batch=16, lr=3e-3, ckpt_every=50, log_every=5),
    # the test suite: seconds per model
    "test": Preset(name="test", data=D.DataSpec(source="synthetic", vocab_size=320, seq_len=32,
                                                 synthetic_docs=300, arith_frac=0.05,
                                                 tokenizer_train_bytes=50_000),
                   d_model=32, n_layers=2, n_heads=2, d_mlp=64, tokens=40 * 8 * 32, batch_size=8,
                   micro_batch=4, lr=1e-2, warmup_frac=0.1, ckpt_every=10, log_every=2, val_seqs=8),
    # the published book: a small model trained long, so that all three are competent on the held-out
    # arithmetic task and see > 50 tokens per non-embedding parameter (56.5). Chosen by the design run on
    # one H200 (benchmarks/results/triplet_design.md: exact match ar 100%, dlm 99%, ar2dlm 94%, ar2dlm_b25
    # 99.5%, chance 3%; training 13.5 min for the four runs). At 25% arithmetic and 100M tokens the
    # diffusion models stayed at chance; a probe at d256/50% arithmetic reached 53.5% at 300M tokens.
    "gpu": Preset(name="gpu", data=D.DataSpec(source="gutenberg", vocab_size=16384, seq_len=512, arith_frac=0.5,
                                               tokenizer_train_bytes=50_000_000),
                  d_model=256, n_layers=8, n_heads=4, d_mlp=704, tokens=600_000_000, batch_size=128,
                  micro_batch=128, lr=2e-3, warmup_frac=0.02, branch_fracs=(0.25,), ckpt_every=1000,
                  log_every=10, val_seqs=64),
}


def get_preset(preset: str | Preset, **overrides: Any) -> Preset:
    """A preset by name (or as given) with field overrides; data fields may be overridden too.

    ``seed`` is the training seed (:class:`Preset`); ``data_seed`` overrides the data's ``seed`` (the
    synthetic corpus and the arithmetic training rows). ``branch_fracs`` / ``snapshot_fracs`` may be
    given as any sequence of numbers.
    """
    if isinstance(preset, Preset):
        p = preset
    elif preset in PRESETS:
        p = PRESETS[preset]
    else:
        raise LayerwiseError(f"unknown preset {preset!r}: use one of {sorted(PRESETS)} or pass a Preset")
    data_fields = {f.name for f in dataclasses.fields(D.DataSpec)}
    preset_fields = {f.name for f in dataclasses.fields(Preset)}
    overrides = dict(overrides)
    for k in ("branch_fracs", "snapshot_fracs"):
        if k in overrides:
            v = overrides[k]
            overrides[k] = tuple(float(x) for x in ((v,) if isinstance(v, (int, float)) else v))
    top = {k: v for k, v in overrides.items() if k in preset_fields or k not in data_fields | {"data_seed"}}
    dat = {k: v for k, v in overrides.items() if k in data_fields and k not in preset_fields}
    if "data_seed" in overrides:
        dat["seed"] = overrides["data_seed"]
    bad = set(top) - preset_fields
    if bad:
        raise LayerwiseError(f"unknown preset field(s) {sorted(bad)}: Preset has "
                             f"{[f.name for f in dataclasses.fields(Preset)]} and DataSpec {sorted(data_fields)}")
    if dat:
        top["data"] = dataclasses.replace(p.data, **dat)
    p = dataclasses.replace(p, **top) if top else p
    p.validate()
    return p



def model_config(preset: Preset, tokenizer: Any, objective: Objective | str, attn_implementation: str = "sdpa") -> Any:
    """``LlamaConfig`` of the preset; only ``is_causal`` differs between objectives."""
    from transformers import LlamaConfig

    vocab = len(tokenizer)
    vocab = -(-vocab // 64) * 64  # pad to a multiple of 64 for tensor-core friendly matmuls
    kw: dict[str, Any] = dict(
        vocab_size=vocab, hidden_size=preset.d_model, intermediate_size=preset.d_mlp,
        num_hidden_layers=preset.n_layers, num_attention_heads=preset.n_heads, num_key_value_heads=preset.n_heads,
        max_position_embeddings=preset.seq_len, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        attn_implementation=attn_implementation)
    cfg = LlamaConfig(**kw)
    cfg.is_causal = Objective(objective).causal
    return cfg


def init_model(preset: Preset, tokenizer: Any, objective: Objective | str,
               attn_implementation: str = "sdpa") -> torch.nn.Module:
    """A freshly initialised model; identical weights for every objective (seeded, same shapes)."""
    from transformers import LlamaForCausalLM

    cfg = model_config(preset, tokenizer, objective, attn_implementation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(preset.seed)
        return LlamaForCausalLM(cfg)


def n_params(model: torch.nn.Module, non_embedding: bool = True) -> int:
    """Parameter count; ``non_embedding`` drops the input embedding (the LM head matmul is compute)."""
    hf: Any = model  # a transformers model (nn.Module's typing does not know its methods)
    emb = hf.get_input_embeddings().weight.numel() if non_embedding else 0
    return sum(p.numel() for p in model.parameters()) - emb


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """Training FLOPs per token: ``6 * N_nonembedding + 12 * n_layers * d_model * seq_len``.

    The second term is attention's score and value matmuls (PaLM's appendix B convention, counted
    in full even for causal masks).
    """
    hf: Any = model  # a transformers model: nn.Module's typing does not know its config
    c = hf.config
    return 6.0 * n_params(model) + 12.0 * c.num_hidden_layers * c.hidden_size * seq_len

