import pytest
import torch
import torch.nn.functional as F

from smec.errors import ConfigError
from smec.losses.alignment import SimilarityAlignmentLoss, pair_cosines

STUDENT = torch.tensor([[0.5, 0.2], [0.1, -0.3]])
TEACHER = torch.tensor([[0.3, 0.2], [0.1, 0.1]])
# errors: 0.2, 0, 0, −0.4


@pytest.mark.parametrize(
    ("distance", "expected"),
    [
        ("l2", (0.04 + 0.16) / 4),
        ("l1", (0.2 + 0.4) / 4),
        # |e| >= beta=0.1 → |e| − beta/2: 0.15 and 0.35.
        ("smooth_l1", (0.15 + 0.35) / 4),
    ],
)
def test_hand_computed_distances(distance, expected):
    assert SimilarityAlignmentLoss(distance)(STUDENT, TEACHER).item() == pytest.approx(expected)


def test_smooth_l1_is_quadratic_below_beta():
    loss = SimilarityAlignmentLoss("smooth_l1", beta=1.0)(STUDENT, TEACHER)
    assert loss.item() == pytest.approx(0.5 * (0.04 + 0.16) / 4)


def test_mask_averages_over_kept_pairs_only():
    loss_fn = SimilarityAlignmentLoss("l1")
    mask = torch.tensor([[True, False], [False, True]])
    assert loss_fn(STUDENT, TEACHER, mask).item() == pytest.approx((0.2 + 0.4) / 2)
    assert loss_fn(STUDENT, TEACHER, torch.zeros(2, 2, dtype=torch.bool)).item() == 0.0


def test_gradient_reaches_student_only():
    student, teacher = STUDENT.clone().requires_grad_(), TEACHER.clone().requires_grad_()
    SimilarityAlignmentLoss()(student, teacher).backward()
    # d/ds mean((s − t)²) = 2(s − t)/(B·K)
    torch.testing.assert_close(student.grad, 2 * (STUDENT - TEACHER) / 4)
    assert teacher.grad is None


def test_pair_cosines_gathered_and_indexed_agree_with_brute_force():
    torch.manual_seed(0)
    z, memory = torch.randn(3, 4), torch.randn(10, 4)
    indices = torch.tensor([[0, 5], [9, 9], [2, 3]])
    from_indices = pair_cosines(z, memory, indices)
    expected = torch.tensor(
        [[F.cosine_similarity(z[i], memory[j], dim=0).item() for j in row] for i, row in enumerate(indices)]
    )
    torch.testing.assert_close(from_indices, expected)
    torch.testing.assert_close(pair_cosines(z, memory[indices]), expected)
    unit_z, unit_memory = F.normalize(z, dim=1), F.normalize(memory, dim=1)
    torch.testing.assert_close(pair_cosines(unit_z, unit_memory, indices, normalize=False), expected)


def test_pair_cosines_backpropagate_into_memory_side():
    torch.manual_seed(0)
    z, memory = torch.randn(2, 3, requires_grad=True), torch.randn(5, 3, requires_grad=True)
    pair_cosines(z, memory, torch.tensor([[0, 1], [1, 2]])).sum().backward()
    assert z.grad.abs().sum() > 0
    assert memory.grad[3:].abs().sum() == 0 and memory.grad[:3].abs().sum() > 0


def test_end_to_end_alignment_is_zero_for_a_cosine_preserving_student():
    torch.manual_seed(0)
    h, memory = torch.randn(4, 6), torch.randn(20, 6)
    teacher_scores = F.normalize(h, dim=1) @ F.normalize(memory, dim=1).T
    indices = teacher_scores.topk(3, dim=1).indices
    q, _ = torch.linalg.qr(torch.randn(6, 6))
    teacher = pair_cosines(h, memory, indices)
    student = pair_cosines(h @ q, memory @ q, indices)
    assert SimilarityAlignmentLoss()(student, teacher).item() == pytest.approx(0.0, abs=1e-10)


def test_config_errors():
    with pytest.raises(ConfigError, match=r"distance must be one of l2, l1, smooth_l1, got 'kl'"):
        SimilarityAlignmentLoss("kl")
    with pytest.raises(ConfigError, match=r"beta must be a number > 0, got 0"):
        SimilarityAlignmentLoss("smooth_l1", beta=0)


def test_shape_errors():
    loss_fn = SimilarityAlignmentLoss()
    with pytest.raises(
        ValueError, match=r"student and teacher must both be \(B, K\), got \(2, 2\) and \(2, 3\)"
    ):
        loss_fn(STUDENT, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"mask must be a bool tensor of shape \(2, 2\)"):
        loss_fn(STUDENT, TEACHER, torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"a 2-D memory \(M, d\) needs indices of shape \(B, K\) with B=2"):
        pair_cosines(torch.randn(2, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"indices are only used with a 2-D memory"):
        pair_cosines(torch.randn(2, 3), torch.randn(2, 4, 3), torch.zeros(2, 4, dtype=torch.long))
