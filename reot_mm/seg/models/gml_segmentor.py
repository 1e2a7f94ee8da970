"""The GML segmentor as the student of a frozen teacher (GML Sec. 3.3, A.2).

Suh and Seo, Long-Tailed Recognition by Mutual Information Maximization
between Latent Features and Ground-Truth Labels, ICML 2023 (arXiv:2305.01160):
the class-wise queues hold contrast samples from a pre-trained, frozen teacher
rather than from the student, because the keys of rare classes are rewritten
so seldom that a moving student would leave them outdated. The paper's ADE20K
experiment (Sec. 4.8, A.2) gives no teacher; this module supplies one in the
spirit of Sec. 3.3: a segmentor trained first with L_cls only (the cosine
FCN of ``configs/ade20k/gml-teacher_*.py``), whose decode-head features at
the pixels the student samples are the queued keys.

:class:`GMLEncoderDecoder` is mmseg's ``EncoderDecoder`` plus the
student-defined teacher outputs of :class:`reot_mm.engine.TeacherStudent`
(see its module docstring for the contract): alone it trains exactly like
``EncoderDecoder`` (the GML head then queues its own features).
"""
import torch
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS

from reot_mm.seg.models.gml_head import GMLFCNHead


def teacher_pixel_features(teacher, inputs: torch.Tensor) -> torch.Tensor:
    """The (B, channels, h, w) decode-head features of an mmseg segmentor
    (its 1×1 classifier's input, before dropout)."""
    return teacher.decode_head._forward_feature(teacher.extract_feat(inputs))


@MODELS.register_module()
class GMLEncoderDecoder(EncoderDecoder):
    """``EncoderDecoder`` with a :class:`GMLFCNHead`, teacher-ready.

    As the student of ``TeacherStudent``: the frozen teacher (any mmseg
    ``EncoderDecoder`` whose decode head has ``_forward_feature``, e.g. the
    cosine FCN teacher or upstream's FCN) encodes the batch once, under
    ``no_grad``; the GML head enqueues the teacher's decode-head features at
    its sampled pixels; ``GMLQueueHook(prefill='teacher')`` may pre-fill the
    queue with the teacher's features of sampled training pixels. Prediction
    is the student's alone.
    """

    # TeacherStudent.prefill_step: preprocess training batches as in training
    # (random crops of different sizes are padded, label maps with 255)
    prefill_in_training_mode = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.decode_head, GMLFCNHead):
            raise ValueError('GMLEncoderDecoder needs decode_head of type '
                             f"'GMLFCNHead', got {type(self.decode_head).__name__}")

    # ------------------------------------------------- teacher (contract of
    # reot_mm.engine.teacher_student: student-defined teacher outputs)
    def check_teacher(self, teacher) -> None:
        """The teacher is an mmseg segmentor whose decode-head width is the
        key MLP's input width (``decode_head.key_in_channels``)."""
        head = getattr(teacher, 'decode_head', None)
        if head is None or not callable(getattr(head, '_forward_feature', None)) \
                or not callable(getattr(teacher, 'extract_feat', None)):
            raise ValueError(
                'GMLEncoderDecoder: the teacher must be an mmseg segmentor '
                'with extract_feat and a decode head with _forward_feature '
                f'(e.g. EncoderDecoder with an FCNHead), got '
                f'{type(teacher).__name__}')
        expected = self.decode_head.key_in_channels
        if getattr(head, 'channels', None) != expected:
            raise ValueError(
                "teacher/student feature dimension mismatch: the teacher's "
                f'decode head has channels={getattr(head, "channels", None)} '
                f"but the student's queue and key MLP take key_in_channels="
                f'{expected} (set decode_head.key_in_channels to the '
                "teacher's decode_head.channels)")

    def teacher_outputs_for(self, teacher, inputs: torch.Tensor,
                            data_samples) -> dict:
        """The teacher's decode-head features of the batch (the wrapper calls
        this under ``no_grad`` with the teacher in eval mode)."""
        return dict(pixel_features=teacher_pixel_features(teacher, inputs))

    def loss_with_teacher(self, inputs: torch.Tensor, data_samples,
                          teacher_outputs: dict) -> dict:
        """``EncoderDecoder.loss`` with the teacher's features as the keys."""
        with self.decode_head.teacher_keys(teacher_outputs['pixel_features']):
            return self.loss(inputs, data_samples)

    def enqueue_teacher_features(self, teacher_outputs: dict,
                                 data_samples) -> int:
        """Queue pre-fill: the teacher's features at sampled labelled pixels."""
        return self.decode_head.enqueue_teacher_pixels(
            teacher_outputs['pixel_features'], data_samples)
