import re

import pytest
import torch
import torch.nn.functional as F

from smec.errors import ConfigError
from smec.losses.matryoshka import MatryoshkaSimilarityLoss
from smec.losses.rank import InfoNCELoss, PairwiseRankLoss
from smec.losses.smec_objective import SMECObjective


def _batch(seed: int = 0):
    torch.manual_seed(seed)
    rows, q, d = torch.randn(6, 8), torch.randn(4, 8), torch.randn(4, 8)
    stacked = torch.cat([rows, q, d])
    targets = [(8, stacked * 1.5), (4, stacked[:, :4])]
    return rows, targets


def test_the_sum_of_every_weighted_term_over_the_sizes():
    rows, targets = _batch()
    objective = SMECObjective([8, 4], pair_weight=0.5, rank_weight=0.2, infonce_weight=0.3, sxbm_weight=2.0)
    sxbm_calls = []

    def sxbm(i, student):
        sxbm_calls.append((i, student.shape))
        return student.square().mean()

    out = objective(targets, rows, (4, 4), sxbm)
    expected = 0.0
    for m, e in targets:
        er, eq, ed = e.split([6, 4, 4])
        eq, ed = F.normalize(eq, dim=-1), F.normalize(ed, dim=-1)
        expected += 0.5 * MatryoshkaSimilarityLoss([m])(er, rows).loss
        expected += 0.2 * PairwiseRankLoss()(eq, ed).loss + 0.3 * InfoNCELoss()(eq, ed).loss
        expected += 2.0 * er.square().mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert sxbm_calls == [(0, (6, 8)), (1, (6, 4))]  # the rows' part of each size
    assert set(out.terms) == {"pair", "rank", "infonce", "sxbm"}


def test_pairs_only_and_the_sxbm_term_logged_as_zero_while_off():
    _, targets = _batch()
    pairs_only = [(m, e[6:]) for m, e in targets]
    objective = SMECObjective([8, 4], pair_weight=0.0, rank_weight=1.0, sxbm_weight=1.0)
    assert objective.needs_pairs and not objective.trains_rows
    out = objective(pairs_only, None, (4, 4), None)
    assert out.terms["sxbm"].item() == 0.0 and set(out.terms) == {"rank", "sxbm"}


def test_validation_is_the_plain_pair_term_per_size():
    rows, _ = _batch()
    objective = SMECObjective([8, 4], pair_weight=3.0, distance="l1")
    out = {8: rows * 2, 4: rows[:, :4]}
    losses = objective.validation(out, rows)
    assert set(losses) == {8, 4}
    assert losses[4].item() == pytest.approx(
        MatryoshkaSimilarityLoss([4], distance="l1")(rows[:, :4], rows).loss.item()
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rank_weight": -1}, "rank_weight must be a number >= 0, got -1"),
        ({"rank_temperature": 0}, "rank_temperature must be a number > 0, got 0"),
        ({"infonce_temperature": 0}, "infonce_temperature must be a number > 0, got 0"),
        ({"distance": "cos"}, "distance must be one of mse, l1, got 'cos'"),
        ({"topk_weight": 0.5}, "topk_weight=0.5 needs topk > 0 (the number of neighbours), got topk=0"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        SMECObjective([8, 4], **kwargs)
