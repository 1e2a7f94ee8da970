"""Shared pieces of the ADE20K end-to-end tests (BCL head, GML teacher).

``PROBE`` is the source of a test-only hook module: after every training
iteration each rank writes the state it holds (class counts of every
count-aware module, queue fingerprints, a parameter checksum, the number of
labelled pixels of its batch) to ``rank{r}_iter{i}.json`` in the work dir.
Runs are launched with ``tests/launch.py``.
"""
import json
import os
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROBE = textwrap.dedent('''
    import json
    import os.path as osp

    import torch
    from mmengine.dist import get_rank
    from mmengine.hooks import Hook
    from mmengine.model import is_model_wrapper
    from mmengine.registry import HOOKS

    from reot_mm.models import ClassQueue


    @HOOKS.register_module()
    class DenseRankProbe(Hook):
        priority = 'LOWEST'

        def after_train_iter(self, runner, batch_idx, data_batch=None,
                             outputs=None):
            model = runner.model
            module = model.module if is_model_wrapper(model) else model
            params = torch.cat([p.detach().flatten() for p in module.parameters()])
            labelled = sum(int((s.gt_sem_seg.data != 255).sum())
                           for s in data_batch['data_samples'])
            record = dict(
                wrapper=type(model).__name__,
                world_size=runner.world_size,
                counts=[m.class_counts.tolist() for m in module.modules()
                        if hasattr(m, 'set_class_counts')],
                queues=[m.fingerprint() for m in module.modules()
                        if isinstance(m, ClassQueue)],
                labelled=labelled,
                loss=float(outputs['loss']),
                losses={k: float(v) for k, v in outputs.items()
                        if 'loss_' in k},
                param_sum=float(params.double().sum()),
                param_abs=float(params.double().abs().sum()))
            path = osp.join(runner.work_dir,
                            f'rank{get_rank()}_iter{runner.iter + 1}.json')
            with open(path, 'w') as handle:
                json.dump(record, handle)
''')

EVALUATOR = '''
val_evaluator = dict(type='FrequencyBinnedIoUMetric', iou_metrics=['mIoU'],
                     bin_mode='count', bin_edges=(1000, 100))
test_evaluator = val_evaluator
'''


def rank_records(work_dir, iteration: int, world: int = 2) -> list:
    return [json.loads((work_dir / f'rank{r}_iter{iteration}.json').read_text())
            for r in range(world)]
