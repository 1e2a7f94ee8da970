"""Mixed precision: the contrastive losses (BCL Eq. 9, GML Eq. 5/7 + L_τ,
RE-OT contrastive Eq. 16 under U(a) and U(a, b)) run their similarities in
fp32 under autocast (tools/train.py --amp), so a bf16-autocast step on the CPU
gives the fp32 values of the same half-precision inputs."""
import pytest
import torch
import torch.nn.functional as F

import reot_mm  # noqa: F401
from reot_mm.losses.bcl_loss import BCLLoss
from reot_mm.losses.gml_loss import GMLLoss
from reot_mm.losses.reot_contrastive_loss import REOTContrastiveLoss


def half_inputs(seed):
    generator = torch.Generator().manual_seed(seed)

    def unit(*shape):
        return F.normalize(torch.randn(*shape, generator=generator),
                           dim=-1).bfloat16()

    return generator, unit


def bcl_case():
    generator, unit = half_inputs(0)
    labels = torch.randint(4, (10, ), generator=generator)
    module = BCLLoss(temperature=0.07, lc_weight=0.0, bcl_weight=1.0)
    tensors = dict(embeddings=unit(10, 2, 6), prototypes=unit(4, 6))
    return tensors, lambda t: module.contrastive(
        labels, t['embeddings'], t['prototypes'], 4)


def gml_case():
    generator, unit = half_inputs(1)
    module = GMLLoss(num_classes=4, tau_g=0.07, kd_weight=1.0,
                     class_counts=[8, 4, 2, 1])
    target = torch.randint(4, (6, ), generator=generator)
    key_labels = torch.arange(20) % 4
    tensors = dict(query=unit(6, 8), keys=unit(20, 8),
                   cls_score=unit(6, 4), teacher_scores=unit(6, 4))

    def run(t):
        out = module(t['cls_score'], target, t['query'], t['keys'], key_labels,
                     key_indices=torch.arange(20) + 100,
                     sample_indices=torch.arange(6) + 100,
                     teacher_scores=t['teacher_scores'])
        return sum(v for k, v in out.items() if k.startswith('loss'))
    return tensors, run


def gml_head_case():
    """The segmentation head calls GMLLoss.likelihood_terms directly."""
    generator, unit = half_inputs(3)
    module = GMLLoss(num_classes=3, tau_g=0.07, class_counts=[9, 3, 1])
    target = torch.randint(3, (5, ), generator=generator)
    key_labels = torch.arange(12) % 3
    tensors = dict(query=unit(5, 8), keys=unit(12, 8))

    def run(t):
        out = module.likelihood_terms(
            t['query'], t['keys'], key_labels, target, module.log_prior(3, 'cpu'),
            key_indices=torch.arange(12) + 100,
            sample_indices=torch.arange(5) + 100)
        return out['loss_gml'] + out['loss_tau']
    return tensors, run


def reot_contrastive_case(constraints):
    def case():
        generator, unit = half_inputs(2)
        labels = torch.randint(3, (8, ), generator=generator)
        module = REOTContrastiveLoss(temperature=0.07,
                                     supervision='supervised',
                                     constraints=constraints)
        return (dict(features=unit(8, 2, 6)),
                lambda t: module(t['features'], labels))
    return case


@pytest.mark.parametrize('case', [
    bcl_case, gml_case, gml_head_case, reot_contrastive_case('a'),
    reot_contrastive_case('ab')
], ids=['bcl', 'gml', 'gml-head', 'reot-contrastive-U(a)',
        'reot-contrastive-U(a,b)'])
def test_loss_under_autocast_equals_fp32_on_the_same_inputs(case):
    tensors, run = case()
    results = []
    for amp, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        leaves = {k: v.to(dtype).clone().requires_grad_()
                  for k, v in tensors.items()}
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
            loss = run(leaves)
        assert loss.dtype == torch.float32
        loss.backward()
        results.append((loss.detach(),
                        {k: v.grad.float() for k, v in leaves.items()
                         if v.grad is not None}))
    (amp_loss, amp_grads), (fp32_loss, fp32_grads) = results
    torch.testing.assert_close(amp_loss, fp32_loss, rtol=1e-6, atol=1e-6)
    assert amp_grads.keys() == fp32_grads.keys() and amp_grads
    for key in amp_grads:
        # the gradient reaches the bf16 leaves rounded to bf16
        torch.testing.assert_close(amp_grads[key],
                                   fp32_grads[key].bfloat16().float())
