"""The same results on a CUDA device as on the CPU (marker ``cuda``).

Skipped where there is no CUDA device; ``benchmarks/gpu_check.sh`` runs them
on a GPU machine. Each test computes one thing on the CPU and on the device
from the same inputs and compares:

* the RE-OT Sinkhorn solver (RE-OT NeurIPS 2023 Eq. 6-8, 16) in fp32 and
  fp64, both memory modes, with the honest ``converged`` flag;
* the RE-OT loss (Eq. 14-16) built from the registry, U(a) and U(a, b);
* the GML class-wise queue (GML ICML 2023 Eq. 6);
* a training step of the digits demo model (RE-OT loss head), and a bf16
  autocast step of it, finite and close to fp32.

The loss and queue tests need mmengine, the training steps mmpretrain (they
skip, saying so, on a bare GPU image without them; see
benchmarks/gpu_check.sh for carrying them as wheels).
``REOT_TEST_DEVICE=cpu`` runs them on the CPU against itself (to exercise
the code without a GPU; the comparisons are then trivial).
"""
import copy
import math
import os
import os.path as osp

import pytest
import torch

DEVICE = os.environ.get('REOT_TEST_DEVICE', 'cuda')
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE == 'cuda' and not torch.cuda.is_available(),
                       reason='no CUDA device'),
]


@pytest.fixture(autouse=True)
def _full_fp32_precision():
    """No TF32 in matmuls and convolutions (cuDNN allows it by default):
    the comparisons with the CPU are at fp32 tolerances."""
    saved = (torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, \
        torch.backends.cudnn.allow_tf32 = saved


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _plan_error(res, a, b):
    plan = res.plan().double().cpu()
    err = (plan.sum(-1) - a.double()).abs().sum(-1)
    if b is not None:
        err = err + (plan.sum(-2) - b.double()).abs().sum(-1)
    return err


# -------------------------------------------------------------- solver
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('memory', ['buffer', 'stream'])
@pytest.mark.parametrize('constraints', ['ab', 'a'])
def test_sinkhorn_device_equals_cpu(dtype, memory, constraints):
    """RE-OT Eq. 6-8 (U(a, b)) and Eq. 16 (U(a)): same plan on both."""
    from reot_mm.ot import reot_sinkhorn
    gen = _gen(0)
    cost = torch.rand(3, 300, 40, generator=gen, dtype=torch.float64)
    log_q = torch.randn(300, 40, generator=gen, dtype=torch.float64)
    log_q[0, 3] = -math.inf
    b = torch.rand(40, generator=gen, dtype=torch.float64) + 0.1
    b = b / b.sum()
    tol = 1e-6 if dtype == torch.float32 else 1e-10
    kwargs = dict(constraints=constraints, memory=memory, tol=tol,
                  max_iter=5000, chunk_size=64)
    args = [cost.to(dtype), 0.1, None, b.to(dtype), log_q.to(dtype)]
    ref = reot_sinkhorn(*args, **kwargs)
    res = reot_sinkhorn(*[t.to(DEVICE) if torch.is_tensor(t) else t
                          for t in args], **kwargs)
    assert res.f.device.type == torch.device(DEVICE).type
    assert res.converged and ref.converged
    atol = 1e-6 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(res.plan().cpu(), ref.plan(), atol=atol,
                               rtol=0)
    assert res.plan()[:, 0, 3].eq(0).all()
    a = torch.full((300, ), 1 / 300, dtype=torch.float64)
    err = _plan_error(res, a, b if constraints == 'ab' else None)
    assert (err < tol).all()


def test_sinkhorn_device_fp32_huge_cost_over_epsilon_is_honest():
    """|C|/ε = 1e6 in fp32: the returned plan meets its marginals."""
    from reot_mm.ot import reot_sinkhorn
    n, m = 1000, 100
    cost = 1e3 * (1 + 1e-3 * torch.rand(n, m, generator=_gen(1)))
    res = reot_sinkhorn(cost.to(DEVICE), 1e-3)
    a, b = torch.full((n, ), 1 / n), torch.full((m, ), 1 / m)
    assert res.converged and _plan_error(res, a, b).item() < 1e-6


# ----------------------------------------------------------------- loss
@pytest.mark.parametrize('constraints', ['a', 'ab'])
def test_reot_loss_from_registry_device_equals_cpu(constraints):
    """RE-OT loss (Eq. 14-16) with the interpolated prior (Eq. 37)."""
    pytest.importorskip('mmengine')
    import reot_mm
    from mmengine.registry import MODELS
    reot_mm.register_all_modules()
    cfg = dict(type='REOTLoss', prior='interpolated',
               class_counts=[50, 20, 8, 3, 1], constraints=constraints,
               sinkhorn_tol=1e-6)
    cpu_loss = MODELS.build(cfg)
    dev_loss = MODELS.build(cfg).to(DEVICE)
    gen = _gen(2)
    logits = torch.randn(32, 5, generator=gen) * 3
    labels = torch.randint(5, (32, ), generator=gen)
    results = []
    for module, device in ((cpu_loss, 'cpu'), (dev_loss, DEVICE)):
        x = logits.to(device).requires_grad_(True)
        loss = module(x, labels.to(device))
        loss.backward()
        assert torch.isfinite(loss) and loss.device.type == \
            torch.device(device).type
        results.append((loss.detach().cpu(), x.grad.cpu()))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5,
                               atol=1e-6)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4,
                               atol=1e-6)


# ---------------------------------------------------------------- queue
def test_gml_class_queue_device_equals_cpu():
    """GML Eq. 6: per-class FIFO rings hold the same items on both."""
    pytest.importorskip('mmengine')
    from reot_mm.models.class_queue import ClassQueue
    queues = [ClassQueue(num_classes=4, feat_dim=8, size=20,
                         class_counts=[8, 4, 2, 1]).to(d)
              for d in ('cpu', DEVICE)]
    gen = _gen(3)
    for step in range(3):
        feats = torch.randn(7, 8, generator=gen)
        labels = torch.randint(4, (7, ), generator=gen)
        indices = torch.arange(7) + 7 * step
        for queue in queues:
            device = queue.features.device
            queue.enqueue(feats.to(device), labels.to(device),
                          indices.to(device))
    cpu, dev = queues
    assert dev.features.device.type == torch.device(DEVICE).type
    for name in ('features', 'labels', 'indices', 'pointers',
                 'num_enqueued'):
        torch.testing.assert_close(getattr(dev, name).cpu(),
                                   getattr(cpu, name), atol=0, rtol=0)


# --------------------------------------------------------- training step
def _demo_model():
    """The digits demo model (ResNet-8 + RE-OT loss head), counts set."""
    pytest.importorskip('mmpretrain')
    import reot_mm
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    reot_mm.register_all_modules()
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'demo',
                                   'reot_resnet8_100e_digitslt.py'))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.head.loss_module.set_class_counts(
        [60, 40, 27, 18, 12, 8, 5, 3, 2, 1])
    return model


def _batch(device):
    from mmpretrain.structures import DataSample
    gen = _gen(4)
    images = torch.rand(16, 1, 8, 8, generator=gen)
    labels = torch.randint(10, (16, ), generator=gen)
    samples = [DataSample().set_gt_label(int(y)) for y in labels]
    return images.to(device), [s.to(device) for s in samples]


def _train_step(model, device, amp=False):
    """One SGD step; returns (loss before the step, parameters after)."""
    model = model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    images, samples = _batch(device)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                        enabled=amp):
        losses = model(images, samples, mode='loss')
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    optimizer.zero_grad()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    optimizer.step()
    return loss.detach().float().cpu(), [p.detach().float().cpu()
                                         for p in model.parameters()]


def test_digits_demo_training_step_device_equals_cpu():
    model = _demo_model()
    loss_cpu, params_cpu = _train_step(copy.deepcopy(model), 'cpu')
    loss_dev, params_dev = _train_step(copy.deepcopy(model), DEVICE)
    assert torch.isfinite(loss_dev)
    torch.testing.assert_close(loss_dev, loss_cpu, rtol=1e-4, atol=1e-5)
    for p_dev, p_cpu in zip(params_dev, params_cpu):
        torch.testing.assert_close(p_dev, p_cpu, rtol=1e-3, atol=1e-4)


def test_digits_demo_bf16_autocast_step_is_finite_and_close_to_fp32():
    model = _demo_model()
    loss_fp32, params_fp32 = _train_step(copy.deepcopy(model), DEVICE)
    loss_bf16, params_bf16 = _train_step(copy.deepcopy(model), DEVICE,
                                         amp=True)
    assert torch.isfinite(loss_bf16)
    torch.testing.assert_close(loss_bf16, loss_fp32, rtol=3e-2, atol=3e-2)
    for p_bf16, p_fp32 in zip(params_bf16, params_fp32):
        assert torch.isfinite(p_bf16).all()
        torch.testing.assert_close(p_bf16, p_fp32, rtol=5e-2, atol=5e-3)
