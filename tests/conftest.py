"""Test-session setup shared by every test folder.

``import reot_mm`` registers the plugin's types only when mmengine is already
imported (the OpenMMLab case: a config's ``custom_imports`` or a Runner), and
stays light otherwise (see reot_mm/__init__.py). The tests exercise the plugin
as OpenMMLab uses it, so mmengine is imported before any test module: then the
first ``import reot_mm`` (or ``reot_mm.<sub-package>``) in the session
registers everything, whichever test file comes first. The light-import
behaviour itself is tested in fresh subprocesses (tests/test_light_imports.py).

This folder goes on ``sys.path`` so that every test can ``import launch``
(tests/launch.py: free ports, forked gloo ranks, torchrun and tools/train.py
runs); ``--import-mode=importlib`` does not add it.
"""
import os.path as osp
import sys

import mmengine  # noqa: F401

HERE = osp.dirname(osp.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
