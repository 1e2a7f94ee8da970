"""A student trained next to a frozen, pre-trained teacher (GML Sec. 3.3).

``TeacherStudent`` is a model (root ``MODELS``, so it builds from the
mmpretrain, mmdet or mmseg scope) that holds

* the student, a registered sub-module trained as usual, and
* the teacher, built from its own config and loaded strictly from a
  checkpoint, frozen and in eval mode.

The teacher is deliberately *not* a registered sub-module: it is then not in
``parameters()`` (so neither DDP nor the optimizer ever sees it, and DDP does
not broadcast its buffers each step), not re-initialised by the Runner's
``init_weights`` after loading, and not in the student's checkpoint unless
``save_teacher=True``. ``_apply`` is extended so ``.to(device)``, ``.cuda()``
and ``.half()`` still move it, and ``train()`` keeps it in eval mode.

Teacher outputs handed to the student (:meth:`teacher_outputs`):

* ``features`` (B, d): pooled features (GML's raw queue keys);
* ``scores`` (B, C): the head's scores, cosines for a cosine head (GML L_KD);
* ``probs`` (B, C): softmax(scores·scale), the teacher's predictions (the
  RE-OT teacher-based prior r, ``REOTLoss(prior='teacher')``'s
  ``teacher_probs``).

A student may implement ``teacher_inputs(inputs)`` (which view the teacher
sees; default: the same inputs) and ``loss_with_teacher(inputs, data_samples,
teacher_outputs)``. A plain mmpretrain classifier without the latter is
trained through its head with ``teacher_probs`` passed to the head's loss.

Students whose teacher outputs are not pooled image features (mmdet / mmseg
models: RoI or pixel features) define the outputs themselves. The contract,
all methods of the student:

* ``teacher_outputs_for(teacher, inputs, data_samples)`` — optional. If
  defined, the wrapper calls it (instead of :meth:`teacher_outputs`) with the
  frozen teacher in eval mode, under ``torch.no_grad()``, on the
  preprocessed batch; the result (any object, e.g. a dict of the teacher's
  neck features) is what ``loss_with_teacher`` and
  ``enqueue_teacher_features`` receive as teacher outputs. A part that can
  only be evaluated later, on something the student computes in its own
  forward (e.g. the teacher's RoI features for the RoIs the student samples),
  may be returned as a function; such a function must disable gradients
  itself, because it runs outside the wrapper's ``no_grad`` block.
* ``loss_with_teacher(inputs, data_samples, teacher_outputs)`` — required
  with ``teacher_outputs_for``; returns the loss dict.
* ``enqueue_teacher_features(teacher_outputs, data_samples)`` — for
  ``GMLQueueHook``'s teacher pre-fill (:meth:`TeacherStudent.prefill_step`);
  may return the number of items enqueued.
* ``prefill_in_training_mode`` — optional attribute; True makes
  :meth:`TeacherStudent.prefill_step` preprocess the batch in training mode
  (mmseg: crops of different sizes padded, with their label maps).
* ``check_teacher(teacher)`` — optional, called once when the model is built
  (e.g. the teacher's RoI feature width against the student's key MLP); it
  raises ``ValueError`` on a mismatch.

Prediction and ``mode='tensor'`` run the student alone, so testing a student
checkpoint needs no teacher file (``tools/test.py`` drops
``teacher_checkpoint``).
"""
import os.path as osp
from typing import Dict, List, Optional, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.registry import MODELS

__all__ = ['TeacherStudent', 'load_teacher_checkpoint', 'teacher_model_config']

TEACHER_PREFIX = 'teacher.'


def load_teacher_checkpoint(teacher: nn.Module, filename: str,
                            prefix: Optional[str] = None) -> None:
    """Load ``filename`` into ``teacher`` strictly.

    Args:
        teacher: the teacher model.
        filename: checkpoint path (or an mmengine-supported URL).
        prefix: only keys starting with this prefix are used, with the
            prefix removed (e.g. ``'student.'`` to use the student of a
            ``TeacherStudent`` run as teacher).

    Raises:
        FileNotFoundError: a local path that does not exist.
        RuntimeError: missing, unexpected or mis-shaped keys (all listed).
    """
    from mmengine.runner.checkpoint import _load_checkpoint
    if '://' not in filename and not osp.isfile(filename):
        raise FileNotFoundError(
            f'teacher checkpoint {filename!r} does not exist. Train the teacher '
            'first (e.g. configs/gml/gml-teacher_*.py) and pass its checkpoint '
            'as model.teacher_checkpoint (--cfg-options '
            'model.teacher_checkpoint=PATH)')
    checkpoint = _load_checkpoint(filename, map_location='cpu')
    state_dict = checkpoint.get('state_dict', checkpoint) \
        if isinstance(checkpoint, dict) else checkpoint
    if not isinstance(state_dict, dict):
        raise RuntimeError(f'teacher checkpoint {filename!r} holds no state dict')
    state_dict = {(k[len('module.'):] if k.startswith('module.') else k): v
                  for k, v in state_dict.items()}
    if prefix:
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items()
                      if k.startswith(prefix)}
        if not state_dict:
            raise RuntimeError(f'teacher checkpoint {filename!r} has no key '
                               f'starting with teacher_checkpoint_prefix {prefix!r}')
    try:
        teacher.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise RuntimeError(
            f'teacher checkpoint {filename!r} does not match the model built '
            f'from model.teacher (strict loading): {error}') from None


def teacher_model_config(filename: str) -> dict:
    """The ``model`` of a config file: a path, or ``package::path`` of an
    OpenMMLab package (e.g. ``'mmdet::lvis/mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py'``).

    Raises:
        FileNotFoundError: no such config file.
        ValueError: the config has no ``model``.
    """
    from mmengine.config import Config
    if '::' in filename:
        from mmengine.hub import get_config
        cfg = get_config(filename)
    else:
        if not osp.isfile(filename):
            raise FileNotFoundError(
                f'teacher config {filename!r} (model.teacher) does not exist')
        cfg = Config.fromfile(filename)
    if 'model' not in cfg:
        raise ValueError(f'teacher config {filename!r} (model.teacher) has no '
                         'model')
    return cfg.model


@MODELS.register_module()
class TeacherStudent(BaseModel):
    """Student model plus a frozen teacher loaded from a checkpoint.

    Args:
        student: config of the trained model (e.g. ``GMLClassifier``).
        teacher: config of the teacher (e.g. the ``ImageClassifier`` of the
            teacher's training config), or the file name of the teacher's
            training config (a path or ``mmdet::...``), whose ``model`` is
            used.
        teacher_checkpoint: the teacher's weights, loaded strictly when the
            model is built. None builds an untrained teacher and refuses to
            train (allowed for inference-only use, e.g. ``tools/test.py``).
        teacher_checkpoint_prefix: see :func:`load_teacher_checkpoint`.
        save_teacher: also put the teacher's weights into this model's state
            dict (under ``teacher.``); off by default. Teacher keys found in a
            loaded state dict are always loaded into the teacher.
        teacher_logit_scale: multiplier of the teacher's scores before the
            softmax of ``probs``; defaults to the head's ``scale`` (cosine
            heads) or 1.
        teacher_probs_to_head: for students without ``loss_with_teacher``,
            pass ``teacher_probs`` to the head's loss (REOTLoss
            ``prior='teacher'``).
        data_preprocessor: defaults to the student's.
    """

    def __init__(self,
                 student: dict,
                 teacher: dict,
                 teacher_checkpoint: Optional[str] = None,
                 teacher_checkpoint_prefix: Optional[str] = None,
                 save_teacher: bool = False,
                 teacher_logit_scale: Optional[float] = None,
                 teacher_probs_to_head: bool = True,
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.student = MODELS.build(student) if isinstance(student, dict) else student
        if data_preprocessor is None and hasattr(self.student, 'data_preprocessor'):
            self.data_preprocessor = self.student.data_preprocessor
        if isinstance(teacher, str):
            teacher = teacher_model_config(teacher)
        teacher_model = MODELS.build(teacher) if isinstance(teacher, dict) else teacher
        self.teacher_checkpoint = teacher_checkpoint
        if teacher_checkpoint is not None:
            load_teacher_checkpoint(teacher_model, teacher_checkpoint,
                                    teacher_checkpoint_prefix)
        teacher_model.requires_grad_(False)
        teacher_model.eval()
        # not a registered sub-module: out of parameters(), DDP, init_weights
        # and state_dict (see the module docstring)
        object.__setattr__(self, '_teacher', teacher_model)
        self.save_teacher = save_teacher
        self.teacher_probs_to_head = teacher_probs_to_head
        head = getattr(teacher_model, 'head', None)
        self.teacher_logit_scale = float(
            teacher_logit_scale if teacher_logit_scale is not None
            else getattr(head, 'scale', 1.0))
        self._check_feature_dims()
        self._register_state_dict_hook(TeacherStudent._add_teacher_state)

    # -------------------------------------------------------------- teacher
    @property
    def teacher(self) -> nn.Module:
        return self._teacher

    def _check_feature_dims(self) -> None:
        check = getattr(self.student, 'check_teacher', None)
        if callable(check):
            check(self._teacher)
            return
        expected = getattr(self.student, 'teacher_feat_dim', None)
        head = getattr(self._teacher, 'head', None)
        actual = getattr(head, 'in_channels', None)
        if expected is not None and actual is not None and expected != actual:
            raise ValueError(
                f'teacher/student feature dimension mismatch: the teacher\'s '
                f'head takes {actual}-d features but the student expects '
                f'{expected}-d teacher features (its key MLP in_channels / '
                'queue feat_dim); make them equal')

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self._teacher._apply(fn)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        self._teacher.eval()
        return self

    @staticmethod
    def _add_teacher_state(module, state_dict, prefix, local_metadata):
        if module.save_teacher:
            for key, value in module._teacher.state_dict().items():
                state_dict[prefix + TEACHER_PREFIX + key] = value.detach()
        return state_dict

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        teacher_prefix = prefix + TEACHER_PREFIX
        teacher_state = {key[len(teacher_prefix):]: state_dict.pop(key)
                         for key in [k for k in state_dict
                                     if k.startswith(teacher_prefix)]}
        if teacher_state:
            try:
                self._teacher.load_state_dict(teacher_state, strict=True)
            except RuntimeError as error:
                error_msgs.append(f'teacher state in the checkpoint: {error}')
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def _require_teacher(self) -> None:
        if self.teacher_checkpoint is None:
            raise RuntimeError(
                'TeacherStudent was built without teacher_checkpoint: training '
                'needs a pre-trained teacher (model.teacher_checkpoint=PATH)')

    @torch.no_grad()
    def teacher_outputs(self, inputs: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Run the frozen teacher.

        Args:
            inputs: (B, 3, H, W) (or the teacher's input format).

        Returns:
            dict with ``features`` (B, d), and, when the teacher has a head,
            ``scores`` (B, C) and ``probs`` (B, C).
        """
        self._require_teacher()
        teacher = self._teacher
        if teacher.training:  # e.g. someone called teacher.train() directly
            teacher.eval()
        feats = teacher.extract_feat(inputs)
        last = feats[-1] if isinstance(feats, (tuple, list)) else feats
        outputs = dict(features=last.flatten(1))
        if getattr(teacher, 'with_head', False):
            scores = teacher.head(feats)
            outputs['scores'] = scores
            outputs['probs'] = torch.softmax(
                scores.float() * self.teacher_logit_scale, dim=-1)
        return outputs

    def _teacher_inputs(self, inputs):
        select = getattr(self.student, 'teacher_inputs', None)
        return select(inputs) if callable(select) else inputs

    # --------------------------------------------------------------- forward
    def forward(self, inputs, data_samples: Optional[List] = None,
                mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        return self.student(inputs, data_samples, mode=mode)

    @property
    def _student_defines_outputs(self) -> bool:
        return callable(getattr(self.student, 'teacher_outputs_for', None))

    def _student_defined_outputs(self, inputs, data_samples):
        """The student's ``teacher_outputs_for`` under ``no_grad``."""
        self._require_teacher()
        if self._teacher.training:
            self._teacher.eval()
        with torch.no_grad():
            return self.student.teacher_outputs_for(self._teacher, inputs,
                                                    data_samples)

    def loss(self, inputs, data_samples: List) -> Dict[str, torch.Tensor]:
        if self._student_defines_outputs:
            outputs = self._student_defined_outputs(inputs, data_samples)
            with_teacher = getattr(self.student, 'loss_with_teacher', None)
            if not callable(with_teacher):
                raise TypeError(
                    f'{type(self.student).__name__} defines teacher_outputs_for '
                    'but not loss_with_teacher(inputs, data_samples, '
                    'teacher_outputs)')
            return with_teacher(inputs, data_samples, outputs)
        outputs = self.teacher_outputs(self._teacher_inputs(inputs))
        with_teacher = getattr(self.student, 'loss_with_teacher', None)
        if callable(with_teacher):
            return with_teacher(inputs, data_samples, outputs)
        feats = self.student.extract_feat(inputs)
        extra = {}
        if self.teacher_probs_to_head and 'probs' in outputs:
            extra['teacher_probs'] = outputs['probs']
        return self.student.head.loss(feats, data_samples, **extra)

    @torch.no_grad()
    def prefill_step(self, data_batch: dict) -> int:
        """Encode one training batch with the teacher and enqueue it.

        Used by ``GMLQueueHook`` to fill the class-wise queues before training.
        The student must implement ``enqueue_teacher_features(features,
        data_samples)``; if it has ``key_inputs(inputs)``, only that view is
        encoded. A student with ``teacher_outputs_for`` receives its own
        teacher outputs instead of ``features`` (module docstring).

        Returns:
            The number of local items enqueued.
        """
        enqueue = getattr(self.student, 'enqueue_teacher_features', None)
        if not callable(enqueue):
            raise TypeError(f'{type(self.student).__name__} has no '
                            'enqueue_teacher_features(features, data_samples); '
                            'it cannot be pre-filled')
        # training-mode preprocessing where the student asks for it: mmseg
        # pads random crops of different sizes (and their label maps) only
        # then; test mode refuses a batch of unequal images
        training = bool(getattr(self.student, 'prefill_in_training_mode', False))
        data = self.data_preprocessor(data_batch, training)
        if self._student_defines_outputs:
            outputs = self._student_defined_outputs(data['inputs'],
                                                    data['data_samples'])
            enqueued = enqueue(outputs, data['data_samples'])
            return int(enqueued) if enqueued is not None else 0
        # only the queue's view when the student names it (no KD view here)
        select = getattr(self.student, 'key_inputs', None)
        inputs = select(data['inputs']) if callable(select) \
            else self._teacher_inputs(data['inputs'])
        outputs = self.teacher_outputs(inputs)
        enqueue(outputs['features'], data['data_samples'])
        return outputs['features'].shape[0]
