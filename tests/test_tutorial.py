"""docs/tutorial.md runs as written: every code block, in order.

Python blocks with ``title="path"`` are files the reader saves; the other Python
blocks are one script (the page splits it to explain it); bash blocks are run
in a fresh directory that has the repository's ``tools/`` and ``.venv/``, as
the reader's shell in the repository root would.
"""
import os
import os.path as osp
import re
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TUTORIAL = osp.join(ROOT, 'docs', 'tutorial.md')
BLOCK = re.compile(r'^```(\w+)([^\n]*)\n(.*?)^```', re.M | re.S)


def sections():
    """{section title: [(language, title or None, code)]} of the tutorial."""
    with open(TUTORIAL, encoding='utf-8') as handle:
        text = handle.read()
    found = {}
    for part in re.split(r'^## ', text, flags=re.M)[1:]:
        heading = part.splitlines()[0]
        blocks = []
        for language, info, code in BLOCK.findall(part):
            title = re.search(r'title="([^"]+)"', info)
            blocks.append((language, title.group(1) if title else None, code))
        found[heading] = blocks
    return found


def section(prefix):
    matches = [blocks for heading, blocks in sections().items()
               if heading.startswith(prefix)]
    assert len(matches) == 1, f'tutorial has no single section {prefix!r}'
    return matches[0]


def run(command, cwd, timeout=1200):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def test_own_config_trains_tests_and_corrects(tmp_path):
    blocks = section('1.')
    files = [(title, code) for lang, title, code in blocks if title]
    commands = [code for lang, _, code in blocks if lang == 'bash']
    assert files and commands
    assert any("'mmpretrain::" in code for _, code in files)
    assert not any('...' in code for _, code in files), 'a config with elided parts'
    for title, code in files:
        path = tmp_path / title
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)
    for name in ('tools', '.venv'):
        os.symlink(osp.join(ROOT, name), tmp_path / name)
    output = ''
    for code in commands:
        output += run(['bash', '-e', '-c', code], cwd=tmp_path)
    work_dir = tmp_path / 'work_dirs' / 'reot_digits'
    assert (work_dir / 'epoch_3.pth').exists()
    assert 'shot/balanced' in output
    assert (work_dir / 'preds.npz').exists() and (work_dir / 'preds_ot.npz').exists()


def test_plain_pytorch_example(tmp_path):
    blocks = section('2.')
    code = '\n'.join(code for lang, title, code in blocks
                     if lang == 'python' and title is None)
    assert 'reot_sinkhorn' in code and 'prior_schedule' in code and 'REOTLoss' in code
    script = tmp_path / 'plain_pytorch.py'
    script.write_text(code)
    output = run([sys.executable, str(script)], cwd=tmp_path)
    assert 'λ after training: 1.00' in output
    accuracies = [float(x) for x in re.findall(r'argmax of the \w+: +([\d.]+)', output)]
    assert len(accuracies) == 2 and all(0 <= a <= 1 for a in accuracies)
