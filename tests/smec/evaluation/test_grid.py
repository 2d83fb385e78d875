"""evaluate_system with the spec's codes (the grid's other cases: tests/smec/evaluation/test_callback.py)."""

import pytest
import torch

from smec.evaluation.codes import make_code
from smec.evaluation.codes.grid import evaluate_code
from smec.evaluation.evaluator import RetrievalEvaluator
from smec.evaluation.grid import GridWarning, evaluate_system
from smec.evaluation.spec import CodeSpec
from tests.smec.evaluation.test_callback import D, TinySystem, _eval_data


class PerSize(TinySystem):
    """A system whose sizes are separate vectors (as SMEC's chain): size d is a scaled first-d projection."""

    prefix_nested = False

    def embed(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return self.proj(x)[:, :dim] * (1.0 + dim)


@pytest.mark.parametrize("prefix_nested", [True, False], ids=["prefixes", "per-size"])
def test_codes_run_on_the_system_output_at_the_grid_budgets(prefix_nested):
    module = TinySystem() if prefix_nested else PerSize()
    data = _eval_data()
    ev = RetrievalEvaluator(
        data.qrels, data.query_ids, data.corpus_ids, input_dim=D, k=20, calibration_size=150
    )
    codes = [CodeSpec("sq4-quantiles"), CodeSpec("rabitq"), CodeSpec("sq8-quantiles", budgets=[12])]
    with pytest.warns(GridWarning) as caught:
        rows = evaluate_system(
            module, data.queries, data.corpus, ev, [8, 16], ("int4", "binary"), "m", codes=codes
        )
    # The 24-d float32 input is 96 bytes; the grid reaches int4 at 4 and 8 bytes, binary at 1 and 2: those at
    # >= 24x are 1, 2, 4 bytes. sq4 takes 8 dims (a multiple of 8) in 4 bytes; 1-bit rabitq needs 9 at least.
    assert [str(w.message) for w in caught] == [
        "left out of the grid: m + sq4-quantiles at [1, 2] bytes (its narrowest input does not fit); "
        "m + rabitq at [1, 2, 4] bytes (its narrowest input does not fit)"
    ]
    code_rows = [r for r in rows if "code" in r]
    # sq8 at its own 12-byte budget: a 12-d prefix is not a multiple of 8 -> 8 dims; per size: size 8 whole.
    got = [(r["precision"], r["dim"], r["bytes"], r["budget_bytes"]) for r in code_rows]
    assert got == [("sq4-quantiles", 8, 4, 4), ("sq8-quantiles", 8, 8, 12)]
    for r in code_rows:
        assert r["bits"] == 8 * r["bytes"] and r["compression"] == 32 * D / r["bits"]
    # The row is the code on the system's output (size 8 whole, or the prefix), fitted on the calibration sample.
    with torch.no_grad():
        if prefix_nested:
            q, c = (module.compress(torch.as_tensor(x)).numpy() for x in (data.queries, data.corpus))
        else:
            q, c = (module.embed(torch.as_tensor(x), 8).numpy() for x in (data.queries, data.corpus))
    same = evaluate_code(ev, make_code("sq4-quantiles"), "m", q, c, 8, fit_sample_size=150)
    assert code_rows[0]["ndcg@10"] == same["ndcg@10"]


def test_without_codes_the_rows_are_the_grid_alone():
    data = _eval_data()
    ev = RetrievalEvaluator(data.qrels, data.query_ids, data.corpus_ids, input_dim=D, k=20)
    rows = evaluate_system(TinySystem(), data.queries, data.corpus, ev, [8, 16], ("int8",), "m")
    assert sorted((r["dim"], r["precision"]) for r in rows) == [(8, "int8"), (16, "int8")]
    assert not any("code" in r for r in rows)
