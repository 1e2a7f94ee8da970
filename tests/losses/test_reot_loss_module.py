"""REOTLoss as a module: the class-statistics contract, the sample-wise
'official' option and errors that name the argument at fault."""
import math

import pytest
import torch
import torch.nn.functional as F

from reot_mm.losses import REOTLoss, priors
from reot_mm.losses.class_counts import ScheduledPriorModule

C = 5
COUNTS = torch.tensor([50., 20., 10., 4., 1.])


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(3)
    return (torch.randn(8, C, generator=generator) * 2,
            torch.randint(0, C, (8, ), generator=generator))


def test_loss_follows_the_contract(batch):
    logits, labels = batch
    loss = REOTLoss(class_counts=[50., 0., 10., 4., 1.], prior_weight=1.0)
    assert isinstance(loss, ScheduledPriorModule)
    # raw counts stored, smoothed (min_count = 1) where Q is formed: Eq. 35
    assert loss.class_counts.tolist() == [50., 0., 10., 4., 1.]
    smoothed = torch.tensor([50., 1., 10., 4., 1.])
    torch.testing.assert_close(
        loss(logits, labels),
        F.cross_entropy(logits + (smoothed / smoothed.sum()).log(), labels))
    assert set(loss.state_dict()) == {'class_counts', 'prior_weight',
                                      'prior_power'}


def test_sample_wise_official_form_is_the_authors_prior(batch):
    """RE-OT Eq. 38 as the authors' code forms it: R_ij = r_j·[(1 - g)·U +
    g·softmax(s_i)_j], U = 1/(B·C) per entry, rows not renormalised, mixed
    with the uniform prior by λ (Eq. 15)."""
    logits, labels = batch
    g, weight = 0.3, 0.6
    loss = REOTLoss(prior='sample_wise', sample_wise_g=g,
                    sample_wise_form='official', class_counts=COUNTS,
                    prior_weight=weight)
    r = COUNTS / COUNTS.sum()
    batch_size = logits.shape[0]
    rows = r * ((1 - g) / (batch_size * C) + g * logits.softmax(-1))
    q = (1 - weight) / C + weight * rows
    torch.testing.assert_close(loss(logits, labels),
                               F.cross_entropy(logits + q.log(), labels))
    default = REOTLoss(prior='sample_wise', sample_wise_g=g,
                       class_counts=COUNTS, prior_weight=weight)
    assert default.sample_wise_form == 'normalized'
    assert not torch.allclose(default(logits, labels), loss(logits, labels))
    with pytest.raises(ValueError, match='sample_wise_form must be one of'):
        REOTLoss(sample_wise_form='authors')


def test_empty_batch_names_cls_score():
    loss = REOTLoss(prior='uniform')
    with pytest.raises(ValueError, match=r'cls_score is empty \(shape '
                       r'\(0, 5\)\)'):
        loss(torch.zeros(0, C), torch.zeros(0, dtype=torch.long))
    # with avg_factor (mmpretrain passes B) or a sum the empty batch is 0
    assert loss(torch.zeros(0, C), torch.zeros(0, dtype=torch.long),
                reduction_override='sum') == 0


def test_nan_weight_and_teacher_probs_are_named(batch):
    logits, labels = batch
    weight = torch.ones(8)
    weight[4] = math.nan
    with pytest.raises(ValueError, match=r'weight contains 1 non-finite '
                       r'values \(rows \[4\]\)'):
        REOTLoss(prior='uniform')(logits, labels, weight=weight)
    teacher = torch.softmax(torch.randn(8, C), -1)
    teacher[2, 1] = math.nan
    with pytest.raises(ValueError, match='teacher_probs contains 1 non-finite'):
        REOTLoss(prior='teacher')(logits, labels, teacher_probs=teacher)
    with pytest.raises(ValueError, match="prior='teacher' needs teacher_probs"):
        REOTLoss(prior='teacher')(logits, labels)


def test_config_counts_of_another_size_are_an_error():
    """3 counts in the loss config, 10 classes counted by the hook."""
    loss = REOTLoss(class_counts=[1., 2., 3.])
    with pytest.raises(ValueError, match=r'REOTLoss: class_counts in the '
                       r'config has 3 entries.*have 10'):
        loss.set_class_counts(torch.arange(1., 11.))


def test_ldam_and_class_balanced_use_smoothed_counts(batch):
    """Table 1 LDAM and class-balanced rows with a zero count stay finite."""
    logits, labels = batch
    counts = COUNTS.clone()
    counts[3] = 0
    with pytest.warns(UserWarning, match=r'classes \[3\]'):
        ldam = REOTLoss(prior='ldam', class_counts=counts)
    smoothed = counts.clone()
    smoothed[3] = 1
    margins = priors.ldam_margins(smoothed.double())
    shifted = logits - F.one_hot(labels, C) * margins
    torch.testing.assert_close(ldam(logits, labels),
                               F.cross_entropy(shifted, labels))
    balanced = REOTLoss(prior='uniform', supervision='class_balanced',
                        cb_beta=0.9, class_counts=counts)
    weights = priors.class_balanced_weights(smoothed.double(), 0.9)
    expected = (F.cross_entropy(logits, labels, reduction='none')
                * weights[labels]).mean()
    torch.testing.assert_close(balanced(logits, labels), expected)
