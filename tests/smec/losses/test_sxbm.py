import re

import pytest
import torch
import torch.nn.functional as F

from smec.errors import ConfigError
from smec.losses.sxbm import SELF_MATCH, SXBM, SXBMSettings


def _filled(rows: torch.Tensor, k: int = 2, **kw) -> SXBM:
    sxbm = SXBM(rows.shape[1], memory_size=8, k=k, **kw)
    sxbm.enqueue(rows)
    return sxbm


def test_select_masks_the_row_itself_and_dedupes_slots():
    memory = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    sxbm = _filled(memory)
    rows = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.1]])  # row 0 is entry 0 scaled: a self-match
    pick = sxbm.select(rows)
    teacher = F.normalize(rows, dim=1) @ F.normalize(memory, dim=1).T
    expected = teacher.topk(2, dim=1)
    assert torch.allclose(pick.teacher, expected.values)
    assert pick.keep.tolist() == [[False, True], [True, True]]  # cosine 1 >= SELF_MATCH: no signal
    assert float(pick.teacher[0, 0]) >= SELF_MATCH
    assert pick.slots.tolist() == sorted(set(expected.indices.flatten().tolist()))
    assert torch.equal(pick.slots[pick.inverse], expected.indices)


def test_the_term_aligns_student_with_teacher_cosines_on_the_kept_pairs():
    torch.manual_seed(0)
    memory = torch.randn(6, 4)
    sxbm = _filled(memory, k=3, distance="l1")
    rows = torch.randn(5, 4)
    w = torch.randn(4, 2, requires_grad=True)
    pick = sxbm.select(rows)
    student_memory = sxbm.memory_side(pick, lambda m: m @ w, rows.dtype)
    assert not student_memory.requires_grad  # XBM treats memory features as constants
    term = sxbm(rows @ w, student_memory, pick)
    student = F.normalize(rows @ w, dim=1) @ F.normalize(memory @ w, dim=1).T
    brute = (student.gather(1, pick.slots[pick.inverse]) - pick.teacher).abs()
    assert term.item() == pytest.approx((brute * pick.keep).sum().item() / pick.keep.sum().item(), rel=1e-6)
    term.backward()
    assert w.grad is not None and w.grad.abs().sum() > 0  # through the batch side


def test_term_is_off_until_the_memory_holds_k_entries_and_the_warm_up_passed():
    sxbm = SXBM(3, memory_size=8, k=4, warmup_steps=2)
    rows = torch.randn(3, 3)
    encode = lambda m: [m]  # noqa: E731
    assert sxbm.term(rows, 5, encode) is None  # empty memory
    sxbm.enqueue(rows)
    assert len(sxbm) == 3 and sxbm.term(rows, 5, encode) is None  # 3 < k
    sxbm.enqueue(rows)
    assert sxbm.term(rows, 1, encode) is None  # warm-up
    term = sxbm.term(rows, 2, encode)
    assert term is not None and torch.isfinite(term(0, rows))


def test_the_memory_is_in_the_state_dict():
    sxbm = _filled(torch.randn(3, 4))
    assert set(sxbm.state_dict()) == {"memory.queue", "memory.ptr", "memory.filled"}
    restored = SXBM(4, memory_size=8, k=2)
    restored.load_state_dict(sxbm.state_dict())
    assert len(restored) == 3 and torch.equal(restored.memory.queue, sxbm.memory.queue)


def test_settings_defaults_and_bad_arguments():
    settings = SXBMSettings()
    assert (settings.memory_size, settings.k, settings.weight, settings.distance) == (4096, 16, 1.0, "l2")
    built = SXBM.from_settings(10, SXBMSettings(memory_size=32, k=4, warmup_steps=3))
    assert (built.memory.size, built.k, built.warmup_steps) == (32, 4, 3)
    for kwargs, message in [
        ({"k": 9}, "k must be an integer in [1, memory_size=8], got 9"),
        ({"warmup_steps": -1}, "warmup_steps must be an integer >= 0, got -1"),
        ({"distance": "kl"}, "distance must be one of l2, l1, smooth_l1, got 'kl'"),
        ({"memory_size": 0}, "memory_size must be a positive integer, got 0"),
    ]:
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            SXBM(4, **{"memory_size": 8, "k": 2, **kwargs})


@pytest.mark.parametrize("memory_grad", [True, False])
def test_gradient_reaches_the_trainable_layer_through_the_memory_side_only_when_enabled(memory_grad):
    torch.manual_seed(0)
    sxbm = _filled(torch.randn(6, 4), k=3, memory_grad=memory_grad)
    layer = torch.nn.Linear(4, 4)
    rows = torch.randn(5, 4)
    term = sxbm.term(rows, 0, lambda m: [layer(m)])
    value = term(0, layer(rows).detach())  # the batch side carries no gradient here: only the memory side can
    if memory_grad:
        value.backward()
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    else:
        assert not value.requires_grad  # XBM's constants: no path from the memory side to the layer


def test_lambda_and_k_per_stage():
    torch.manual_seed(0)
    memory, rows, w = torch.randn(8, 4), torch.randn(5, 4), torch.randn(4, 3)
    sxbm = _filled(memory, k=[2, 3], weight=[0.5, 2.0], num_stages=2)
    assert (sxbm.ks, sxbm.weights, sxbm.k) == ([2, 3], [0.5, 2.0], 3)
    term = sxbm.term(rows, 0, lambda m: [m @ w, m @ w], stages=[0, 1])
    for i, (k, weight) in enumerate([(2, 0.5), (3, 2.0)]):
        alone = _filled(memory, k=k)  # one stage with this K: the same neighbours (sorted), unweighted
        pick = alone.select(rows)
        expected = alone(rows @ w, alone.memory_side(pick, lambda m: m @ w, rows.dtype), pick)
        assert term(i, rows @ w).item() == pytest.approx(weight * expected.item(), rel=1e-6)
    assert SXBM.from_settings(4, SXBMSettings(weight=[0.0, 0.0], k=2, memory_size=8), 2) is None  # λ = 0: off
    assert SXBM.from_settings(4, SXBMSettings(enabled=False, weight=[1.0]), 2) is None
    with pytest.raises(
        ConfigError, match=r"^k has 3 entries but there are 2 stages \(give one per stage, or one\)$"
    ):
        SXBM(4, memory_size=8, k=[2, 2, 2], num_stages=2)
    with pytest.raises(ConfigError, match=r"^weight must be a number >= 0, got -1$"):
        SXBM(4, memory_size=8, k=2, weight=[1.0, -1], num_stages=2)
