"""Angular margins of the A-softmax row of RE-OT Table 1 (SphereFace ψ(θ)),
ArcFace and CosFace, on the target-class cosine only."""
import math

import pytest
import torch

from reot_mm.losses.margins import cosine_with_margin

THETAS = torch.tensor([0.1, 0.7, 1.2, 2.0, 3.0], dtype=torch.float64)


def _cosines(labels):
    """(5, 3) cosines whose target entries are cos(THETAS)."""
    cosine = torch.full((5, 3), 0.25, dtype=torch.float64)
    return cosine.scatter(1, labels[:, None], THETAS.cos()[:, None])


@pytest.mark.parametrize('m', [1, 2, 4])
def test_table1_a_softmax_psi(m):
    """ψ(θ) = (-1)^k·cos(mθ) - 2k on θ ∈ [kπ/m, (k+1)π/m]."""
    labels = torch.tensor([0, 1, 2, 0, 1])
    got = cosine_with_margin(_cosines(labels), labels, 'multiplicative', m)
    for row, theta in enumerate(THETAS.tolist()):
        k = math.floor(theta * m / math.pi)
        psi = (-1) ** k * math.cos(m * theta) - 2 * k
        assert float(got[row, labels[row]]) == pytest.approx(psi, abs=1e-6)
        others = [j for j in range(3) if j != labels[row]]
        assert torch.all(got[row, others] == 0.25)


def test_additive_and_cosine_margins_and_soft_targets():
    labels = torch.tensor([2, 0, 1, 1, 0])
    cosine = _cosines(labels)
    additive = cosine_with_margin(cosine, labels, 'additive', 0.3)
    torch.testing.assert_close(additive.gather(1, labels[:, None]).squeeze(1),
                               (THETAS + 0.3).cos())
    soft = torch.nn.functional.one_hot(labels, 3).double() * 0.8 + 0.05
    by_cosine = cosine_with_margin(cosine, soft, 'cosine', 0.35)
    torch.testing.assert_close(by_cosine.gather(1, labels[:, None]).squeeze(1),
                               THETAS.cos() - 0.35)
    assert cosine_with_margin(cosine, labels, None, 0.3) is cosine


@pytest.mark.parametrize('margin_type, margin, match', [
    ('angular', 0.5, 'margin_type must be one of'),
    ('multiplicative', 1.5, 'non-negative integer m'),
])
def test_bad_margin_is_named(margin_type, margin, match):
    labels = torch.tensor([0, 1, 2, 0, 1])
    with pytest.raises(ValueError, match=match):
        cosine_with_margin(_cosines(labels), labels, margin_type, margin)
