"""The genuine LLaDA / Dream remote code as test oracles: hub-like folders, tiny checkpoints, generate.py.

The third-party files live in ``../shared/remote_code`` (beside the clone); they are never copied into the
repository. These helpers build, at test time, folders laid out like the hub repos (a ``config.json``
with ``auto_map`` plus the ``.py`` files), tiny random-weight checkpoints saved from the genuine classes
and loaded back through :func:`layerwise.models.load`, and import LLaDA's ``generate.py`` from its path.
Tests that use them skip with a reason (:data:`needs_remote_code`) where the folder is absent.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

#: the genuine files, beside the clone
REMOTE_CODE = Path(__file__).resolve().parents[3] / "shared" / "remote_code"
needs_remote_code = pytest.mark.skipif(not REMOTE_CODE.is_dir(),
                                       reason=f"genuine LLaDA/Dream remote code not found at {REMOTE_CODE}")

LLADA_FILES = ("modeling_llada.py", "configuration_llada.py")
DREAM_FILES = ("modeling_dream.py", "configuration_dream.py", "generation_utils.py", "generation_config.json")
DREAM_AUTO = {"model_type": "Dream", "architectures": ["DreamModel"], "auto_map": {
    "AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"}}


def tiny_config(which: str, vocab: int, remote: Path = REMOTE_CODE, **overrides: Any) -> dict[str, Any]:
    """A tiny config.json: LLaDA's is the 8B hub config with small sizes; mask = vocab - 1, pad = eos = vocab - 2."""
    if which == "llada":
        cfg = json.loads((remote / "configs" / "llada-8b-base.json").read_text())
        cfg.update(d_model=32, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=64, vocab_size=vocab,
                   embedding_size=vocab, mask_token_id=vocab - 1, eos_token_id=vocab - 2, pad_token_id=vocab - 2,
                   max_sequence_length=128, init_device="cpu")
    elif which == "dream":
        cfg = {**DREAM_AUTO, "vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
               "mask_token_id": vocab - 1, "pad_token_id": vocab - 2, "bos_token_id": vocab - 3,
               "eos_token_id": vocab - 2}
    else:
        raise ValueError(which)
    cfg.update(overrides)
    return cfg


def hub_folder(dst: Path, which: str, config: dict[str, Any], remote: Path = REMOTE_CODE,
               modeling: str | None = None) -> Path:
    """``dst`` laid out like the hub repo: ``config.json`` + the genuine files (no weights).
    ``modeling``: another LLaDA modeling file to install as ``modeling_llada.py`` (e.g. the June 2025 one)."""
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.json").write_text(json.dumps(config))
    files = LLADA_FILES if which == "llada" else DREAM_FILES
    for f in files:
        src = remote / which / (modeling if modeling and f == "modeling_llada.py" else f)
        shutil.copy(src, dst / f)
    return dst


def genuine_class(folder: Path) -> tuple[Any, Any, Any]:
    """(config, model class with the project's fixes applied, architecture) of a hub-like folder."""
    from transformers import AutoConfig
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    from layerwise import arch as A

    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    arch = A.detect_architecture(config)
    cls = get_class_from_dynamic_module(config.auto_map["AutoModel"], str(folder))
    arch.patches.apply_cls(cls)
    arch.prepare_config(config)
    return config, cls, arch


def sharpen(model: torch.nn.Module, linear: float = 3.0, head: float = 30.0) -> None:
    """Scale every Linear by ``linear`` and the LM head by ``head`` more: a random model whose predictions
    depend on the context and whose top probabilities are large (so bf16 confidences tie often)."""
    heads = {"model.transformer.ff_out", "lm_head"}
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.mul_(linear * (head if name in heads else 1.0))


def genuine_checkpoint(tmp: Path, which: str, *, vocab: int = 97, seed: int = 0, modeling: str | None = None,
                       sharp: bool = True) -> Path:
    """A tiny random-weight checkpoint of the genuine code, saved as on the hub (weights + the .py files)."""
    src = hub_folder(tmp / f"{which}_src", which, tiny_config(which, vocab), modeling=modeling)
    config, cls, arch = genuine_class(src)
    torch.manual_seed(seed)
    model = cls(config).eval()
    arch.patches.apply_model(model)
    if sharp:
        sharpen(model)
    out = tmp / which
    model.save_pretrained(out)
    for f in src.iterdir():
        if f.suffix == ".py" or f.name == "generation_config.json":
            shutil.copy(f, out / f.name)
    return out


def load_checkpoint(path: Path, which: str, dtype: str, mask_token_id: int) -> Any:
    """``layerwise.models.load`` of a local checkpoint folder on CPU, in ``dtype``."""
    from layerwise import models as M

    family = M.Family.DLM if which == "llada" else M.Family.AR2DLM
    M.register(M.ModelSpec(str(path), family, mask_token_id=mask_token_id, dtype=dtype))
    try:
        return M.load(str(path), device="cpu")
    finally:
        del M.REGISTRY[str(path)]


def import_llada_generate(remote: Path = REMOTE_CODE) -> ModuleType:
    """LLaDA's ``generate.py``, imported from its path (not copied)."""
    name = f"llada_generate_{abs(hash(str(Path(remote).resolve()))):x}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, remote / "llada" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module
