"""Run the reliability tests and write docs/reliability.md from their junit XML.

One row per failure case a probe of the training and evaluation tools found; each
case names the tests that reproduce it (files and a pytest ``-k`` expression, kept
here). Every case runs in its own pytest process with ``--junitxml``; the page lists
what ran, with result and duration, per case and per test.

    OMP_NUM_THREADS=1 python benchmarks/reliability_matrix.py            # writes the page
    python benchmarks/reliability_matrix.py --cases 2 3 --output -       # some cases, stdout

Exits non-zero, naming the case, when a case selects no test (a renamed or deleted
test must not turn a row silently green), and when any selected test fails (the page
is still written, with the failures in it).
"""
import argparse
import datetime
import os
import os.path as osp
import platform
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

# (case, what the probe found, what is checked now, test files, -k expression or None)
CASES = [
    (1, 'Code from a prediction dump',
     'a pickled prediction dump could run code when a tool read it',
     'every tool refuses a dump whose pickle calls a function, naming the global, '
     'exit != 0; real dumps still load',
     ['tests/evaluation/test_safe_pickle.py'], None),
    (2, 'Checkpoint kill',
     'with max_keep_ckpts=1, 3 of 8 random kills left no checkpoint; a truncated '
     'checkpoint stopped --resume',
     'atomic write-then-rename, old checkpoint deleted only after the new one; SIGKILL '
     'in a save and at a random iteration of tools/train.py, then --resume; truncated '
     'newest checkpoint falls back to the previous one, named in the log',
     ['tests/engine/test_checkpoint_safety.py', 'tests/engine/test_resume.py'],
     'not bit_identical and not random_state'),
    (3, 'Resume bit-identical',
     'BCL, GML and the GML teacher diverged at the first step after a resume (global '
     'numpy / Python random states not saved)',
     'random generator states in the checkpoint; resumed BCL, GML teacher and GML '
     'student digits-LT runs equal the uninterrupted ones bit for bit',
     ['tests/engine/test_checkpoint_safety.py', 'tests/engine/test_resume.py'],
     'bit_identical or random_state'),
    (4, 'Distributed settings',
     'gloo without the dist_cfg timeout (a stopped rank blocked rank 0 > 100 s); BN '
     'buffers differed across ranks at validation; no warning for an unscaled LR',
     '2 and 3 ranks (torchrun, gloo): identical counts, λ, parameters with an uneven '
     'last batch; a SIGSTOPped rank makes rank 0 fail within the timeout; validation '
     'scores the saved model; LR warning and --auto-scale-lr',
     ['tests/engine/test_distributed.py'], None),
    (5, 'BCL / GML errors instead of NaN',
     'degenerate inputs (empty batch, empty queue, non-finite features) gave NaN losses',
     'clear errors naming the input; finite losses at tiny temperatures',
     ['tests/losses/test_bcl_loss.py', 'tests/losses/test_gml_loss.py'],
     'error or nan or finite'),
    (6, 'Solver convergence flag',
     'a Sinkhorn solve that did not converge was not reported',
     'non-convergence warns with the residual and stays finite; warm starts converge',
     ['tests/ot/test_sinkhorn.py'], 'converge and not unrolled'),
    (7, 'Post-hoc tool errors',
     'tools/posthoc.py on bad dumps or options failed with tracebacks',
     'bad dumps and options exit != 0 with a message naming them',
     ['tests/tools/test_posthoc_cli.py'], 'bad or error or refuse'),
]


def run_case(case, xml_path):
    """Run one case's tests under pytest; return pytest's exit code."""
    number, _, _, _, files, keyword = case
    missing = [f for f in files if not osp.exists(osp.join(ROOT, f))]
    if missing:
        raise SystemExit(f'case {number}: test file(s) {missing} do not exist')
    command = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
               f'--junitxml={xml_path}', *files]
    if keyword:
        command += ['-k', keyword]
    print(f'case {number}:', ' '.join(command[3:]), flush=True)
    return subprocess.call(command, cwd=ROOT)


def parse_junit(xml_path):
    """[(test id, outcome, seconds, message)] from a junit XML file."""
    tests = []
    for testcase in ET.parse(xml_path).getroot().iter('testcase'):
        name = f"{testcase.get('classname', '')}::{testcase.get('name')}"
        outcome, message = 'passed', ''
        for tag in ('failure', 'error', 'skipped'):
            element = testcase.find(tag)
            if element is not None:
                outcome = {'failure': 'failed', 'error': 'error'}.get(tag, 'skipped')
                message = (element.get('message') or '').splitlines()[0][:160] \
                    if element.get('message') else ''
                break
        tests.append((name, outcome, float(testcase.get('time', 0.0)), message))
    return tests


def _git_commit():
    try:
        return subprocess.check_output(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT,
                                       text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'


def render(results):
    """The Markdown page for [(case, tests)]."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    lines = [
        '# Reliability matrix',
        '',
        '<!-- GENERATED by benchmarks/reliability_matrix.py from pytest junit XML; '
        'do not edit by hand: rerun the script. -->',
        '',
        'The failure cases a probe of the training and evaluation tools found, and the',
        'tests that now reproduce each of them (selected by the file list and `-k`',
        'expression kept in `benchmarks/reliability_matrix.py`). Generated on '
        f'{now}, commit `{_git_commit()}`, Python {platform.python_version()}, '
        f'{os.cpu_count()} CPU cores, '
        f'OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "unset")}:',
        '',
        '```bash',
        'OMP_NUM_THREADS=1 python benchmarks/reliability_matrix.py',
        '```',
        '',
        '| # | case | probe found | checked now | tests | result | duration |',
        '|---|---|---|---|---|---|---|',
    ]
    for case, tests in results:
        number, title, found, checked, _, _ = case
        failed = [t for t in tests if t[1] in ('failed', 'error')]
        passed = sum(t[1] == 'passed' for t in tests)
        result = f'**{len(failed)} failed**, {passed} passed' if failed else f'passed ({passed})'
        lines.append(f'| {number} | {title} | {found} | {checked} | {len(tests)} | {result} | '
                     f'{sum(t[2] for t in tests):.1f} s |')
    lines += ['', '## Tests per case', '']
    for case, tests in results:
        number, title, _, _, files, keyword = case
        selection = ' '.join(f'`{f}`' for f in files) + (f' `-k "{keyword}"`' if keyword else '')
        lines += [f'### {number}. {title}', '', f'Selection: {selection}', '',
                  '| test | result | duration |', '|---|---|---|']
        for name, outcome, seconds, message in tests:
            shown = outcome if not message else f'{outcome}: {message}'
            lines.append(f'| `{name}` | {shown} | {seconds:.2f} s |')
        lines.append('')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cases', type=int, nargs='+',
                        help='run only these case numbers (default: all)')
    parser.add_argument('--output', default=osp.join(ROOT, 'docs', 'reliability.md'),
                        help="the page to write; '-' for stdout")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.cases or c[0] in args.cases]
    unknown = set(args.cases or ()) - {c[0] for c in CASES}
    if unknown:
        parser.error(f'--cases: unknown case(s) {sorted(unknown)}; known 1-{len(CASES)}')
    results, problems = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for case in cases:
            xml_path = osp.join(scratch, f'case{case[0]}.xml')
            code = run_case(case, xml_path)
            tests = parse_junit(xml_path) if osp.exists(xml_path) else []
            if code == 5 or not tests:
                problems.append(f'case {case[0]} ({case[1]}): no test selected by '
                                f'{case[4]} -k {case[5]!r}')
            elif code != 0:
                problems.append(f'case {case[0]} ({case[1]}): pytest exit code {code}')
            results.append((case, tests))
    page = render(results) + '\n'
    if args.output == '-':
        sys.stdout.write(page)
    else:
        with open(args.output, 'w') as handle:
            handle.write(page)
        print(f'wrote {args.output}')
    if problems:
        raise SystemExit('reliability matrix: ' + '; '.join(problems))


if __name__ == '__main__':
    main()
