"""The typed parameter schema: reading it from a parameters cell, coercing values, the errors."""

from __future__ import annotations

import pytest

from layerwise import params as P
from layerwise.config import LayerwiseError

CELL = '''profile = "tiny"      # which profile file produced this run
preset = "tiny"
models = []
data_dir = ""         # "" = the default
cache_dir = ""
device = "auto"
seed = 0
n_seqs = 16
early_frac = 1 / 3
mask_ratios = [0.0, 0.25]
strategies = ["early", "late"]
overrides = {}
over_training = True
limit = None
owl_m, owl_lambda = 5.0, 0.08
'''


def test_schema_types_come_from_the_defaults():
    schema = P.chapter_schema(CELL, "01_x")
    assert list(schema)[:7] == list(P.COMMON_FIELDS)
    types = {name: p.type for name, p in schema.items()}
    assert types["n_seqs"] is int and types["early_frac"] is float and types["mask_ratios"] is list
    assert types["overrides"] is dict and types["over_training"] is bool and types["limit"] is None
    assert schema["early_frac"].default == pytest.approx(1 / 3)
    assert "owl_m" not in schema  # a tuple assignment declares nothing
    assert schema["mask_ratios"].describe() == "a list of numbers"


def test_yaml_text_becomes_lists_mappings_and_numbers():
    assert P.coerce("[a, b/c]", []) == ["a", "b/c"]
    assert P.coerce("{micro_batch: 32}", {}) == {"micro_batch": 32}
    assert P.coerce("16", 3) == 16 and P.coerce("true", False) is True
    assert P.coerce(1, 0.5) == 1.0 and isinstance(P.coerce(1, 0.5), float)
    assert P.coerce("[0, 0.5]", [0.0, 0.25]) == [0.0, 0.5]
    assert P.coerce(("a",), ["x"]) == ["a"]
    assert P.coerce("[not parsed]", "text") == "[not parsed]"  # a text parameter keeps text
    assert P.coerce([1, "x"], None) == [1, "x"]  # a None default takes anything


@pytest.mark.parametrize("value, default, expected", [
    ("many", 16, "an integer"), (True, 16, "an integer"), (1.5, 2, "an integer"), ("x", [], "a list"),
    ([1, "a"], [0.0], "a list of numbers"), (3, "tiny", "text"), ("[a", {}, "a mapping"),
])
def test_wrong_type_names_the_parameter_the_type_and_the_fix(value, default, expected):
    with pytest.raises(LayerwiseError) as e:
        P.coerce(value, default, "n_seqs")
    msg = str(e.value)
    assert len(msg.splitlines()) == 1
    assert msg.startswith("parameter n_seqs = ") and f"is not {expected}" in msg and "e.g. -p n_seqs=" in msg


def test_validate_names_the_chapter_and_rejects_unknown_names():
    schema = P.chapter_schema(CELL, "01_x")
    assert P.validate("01_x", schema, {"models": "[a, b]", "n_seqs": "8"}) == {"models": ["a", "b"], "n_seqs": 8}
    with pytest.raises(LayerwiseError, match=r"^chapter 01_x: parameter n_seqs = 'eight' is not an integer .*"
                                             r"give an integer, e.g. -p n_seqs=16$"):
        P.validate("01_x", schema, {"n_seqs": "eight"})
    with pytest.raises(LayerwiseError, match=r"chapter 01_x: n_seq is no parameter of it \(declared: profile, "):
        P.validate("01_x", schema, {"n_seq": 8})


def test_a_chapter_must_declare_the_common_parameters_with_their_types():
    with pytest.raises(LayerwiseError, match=r"chapter 01_x: its parameters cell lacks seed .* add seed = 0"):
        P.chapter_schema(CELL.replace("seed = 0\n", ""), "01_x")
    with pytest.raises(LayerwiseError, match=r"parameter models = \{\} must default to a list: write models = \[\]"):
        P.chapter_schema(CELL.replace("models = []", "models = {}"), "01_x")


def _kernel_namespace(injected: str) -> dict:
    """A chapter's globals after papermill ran its parameters cell and the injected one (IPython's
    input history is the ``In`` list; its last entry is the cell now running)."""
    ns: dict = {}
    exec(CELL, ns)
    exec(injected, ns)
    ns["In"] = ["", "import os", CELL, injected, "coerce_injected(globals())"]
    return ns


def test_coerce_injected_types_what_papermill_passed_as_text():
    ns = _kernel_namespace('# Parameters\nmodels = "[a, b]"\nn_seqs = "8"\nmask_ratios = "[0.5]"\n')
    common = P.coerce_injected(ns, "01_x")
    assert ns["models"] == ["a", "b"] and ns["n_seqs"] == 8 and ns["mask_ratios"] == [0.5]
    assert isinstance(common, P.CommonParams) and common.models == ["a", "b"] and common.seed == 0


def test_coerce_injected_rejects_unknown_names_and_wrong_types():
    with pytest.raises(LayerwiseError, match=r"chapter 01_x: n_seq is no parameter of it .* papermill -p"):
        P.coerce_injected(_kernel_namespace("# Parameters\nn_seq = 8\n"), "01_x")
    with pytest.raises(LayerwiseError, match=r"chapter 01_x: parameter seed = 'zero' is not an integer"):
        P.coerce_injected(_kernel_namespace('# Parameters\nseed = "zero"\n'), "01_x")


def test_coerce_injected_outside_ipython_checks_the_common_parameters():
    ns: dict = {}
    exec(CELL, ns)
    assert P.coerce_injected(ns).preset == "tiny"
    ns["seed"] = "x"
    with pytest.raises(LayerwiseError, match="parameter seed = 'x' is not an integer"):
        P.coerce_injected(ns)
