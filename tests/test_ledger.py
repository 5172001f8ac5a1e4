"""The ledger's verdicts follow from the numbers by the rule stated in layerwise.ledger."""

from layerwise.ledger import CLAIMS, Part, build_ledger, combine, part_verdict
from layerwise.results import load_results, metric, save_result


def test_part_verdict_follows_the_interval():
    gt = Part("c", "m", ">", 0.0)
    assert part_verdict(gt, metric(0.5, (0.1, 0.9))) == "reproduced"
    assert part_verdict(gt, metric(-0.5, (-0.9, -0.1))) == "not reproduced"
    assert part_verdict(gt, metric(0.1, (-0.1, 0.3))) == "inconclusive"
    assert part_verdict(gt, metric(0.1)) == "inconclusive"  # no interval, no verdict
    assert part_verdict(gt, None) == "not run"
    assert part_verdict(gt, metric(float("nan"), (0.1, 0.2))) == "inconclusive"  # value withheld (chance baseline)
    assert part_verdict(gt, metric(0.5, (0.1, 0.9), meaningful=False)) == "inconclusive"
    lt = Part("c", "m", "<", 0.9)
    assert part_verdict(lt, metric(0.5, (0.4, 0.6))) == "reproduced"
    assert part_verdict(lt, metric(0.95, (0.92, 0.99))) == "not reproduced"


def test_combine_parts():
    assert combine(["reproduced", "reproduced"]) == "reproduced"
    assert combine(["reproduced", "not reproduced"]) == "not reproduced"
    assert combine(["reproduced", "inconclusive"]) == "inconclusive"
    assert combine(["reproduced", "not run"]) == "not run"


def test_build_ledger_from_result_files(tmp_path):
    save_result("03_layer_skipping", profile="test", results_dir=tmp_path, metrics={
        "retention_at_18.75pct_dlm": metric(0.95, (0.92, 0.98), model="dlm"),
        "retention_at_18.75pct_ar": metric(0.40, (0.30, 0.50), model="ar"),
    })
    df = build_ledger(load_results("test", results_dir=tmp_path))
    assert list(df["claim"]) == [c.cid for c in CLAIMS]
    row = df.set_index("claim").loc["A3"]
    assert row["verdict"] == "reproduced"
    assert row["models"] == "dlm, ar" and row["profile"] == "test"
    assert df.set_index("claim").loc["B3", "verdict"] == "not run"
