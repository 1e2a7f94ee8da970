"""The user documentation: words meant for users, links and paths that exist,
licence and citation metadata that agree with the package."""
import glob
import os.path as osp
import re

import pytest
import yaml

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
USER_DOCS = sorted(['README.md', 'CHANGELOG.md'] + [
    osp.relpath(p, ROOT)
    for p in glob.glob(osp.join(ROOT, 'docs', '**', '*.md'), recursive=True)])

# words about how the project is developed, not about using it
NOT_FOR_USERS = {
    'issue': r'\bissues?\b',
    'session': r'\bsessions?\b',
    'helper': r'\bhelpers?\b',
    'shared/': r'shared/',
    'seed 00x (a paper by file number)': r'\bseed 00\d',
    'reference notes': r'\breference[ -]notes?\b',
    'DESIGN.md': r'DESIGN\.md',
}


def read(path):
    with open(osp.join(ROOT, path), encoding='utf-8') as handle:
        return handle.read()


def version_file(name):
    match = re.search(rf"^{name}\s*=\s*'([^']+)'", read('reot_mm/version.py'), re.M)
    return match.group(1)


@pytest.mark.parametrize('path', USER_DOCS)
def test_user_docs_speak_to_users(path):
    hits = []
    for number, line in enumerate(read(path).splitlines(), 1):
        for word, pattern in NOT_FOR_USERS.items():
            if re.search(pattern, line, re.IGNORECASE):
                hits.append(f'{path}:{number}: {word!r} in: {line.strip()}')
    assert not hits, '\n'.join(hits)


def test_the_word_check_catches_words():
    line = 'Measured this session (see ../shared/seeds, seed 003, issue 3).'
    found = {w for w, p in NOT_FOR_USERS.items() if re.search(p, line, re.I)}
    assert found == {'issue', 'session', 'shared/', 'seed 00x (a paper by file number)'}


@pytest.mark.parametrize('path', USER_DOCS)
def test_relative_links_exist(path):
    missing = []
    for target in re.findall(r'\]\(([^)\s]+)\)', read(path)):
        target = target.split('#')[0]
        if not target or re.match(r'[a-z]+:', target):
            continue
        if not osp.exists(osp.join(ROOT, osp.dirname(path), target)):
            missing.append(target)
    assert not missing, f'{path}: links to missing files {missing}'


@pytest.mark.parametrize('path', [p for p in USER_DOCS if p != 'CHANGELOG.md'])
def test_named_repository_paths_exist(path):
    """Every file or folder of the repository a page names in backticks exists
    (``tests/x.py::test_y`` names the file; MessageHub keys such as
    ``reot_mm/class_counts`` have no suffix and are not paths). The changelog
    is left out: it names files that were removed."""
    missing = []
    for token in re.findall(r'`([^`\s]+)`', read(path)):
        token = token.split('::')[0].rstrip('.,;:')
        if not re.match(r'(configs|tools|benchmarks|reot_mm|tests|docs|requirements)/', token):
            continue
        if re.search(r'[{}*…]', token) or not re.search(r'(\.\w+|/)$', token):
            continue  # a family of files, or not a path
        if not osp.exists(osp.join(ROOT, token)):
            missing.append(token)
    assert not missing, f'{path} names missing paths {missing}'


def test_licence_and_citation_agree_with_the_package():
    assert version_file('__license__') == 'Apache-2.0'
    licence = read('LICENSE')
    assert 'Apache License' in licence and 'Version 2.0, January 2004' in licence
    assert 'END OF TERMS AND CONDITIONS' in licence
    citation = yaml.safe_load(read('CITATION.cff'))
    assert citation['cff-version'] == '1.2.0'
    assert citation['version'] == version_file('__version__')
    assert citation['license'] == 'Apache-2.0'
    assert re.search(rf"^## \[?{re.escape(version_file('__version__'))}\]?",
                     read('CHANGELOG.md'), re.M)


def test_readme_bibtex_cites_the_four_papers():
    readme = read('README.md')
    block = re.search(r'```bibtex\n(.*?)```', readme, re.S)
    assert block, 'README.md has no ```bibtex block'
    entries = re.findall(r'@\w+\{', block.group(1))
    assert len(entries) == 4
    fields = re.findall(r'(?<![a-z])title\s*=\s*\{(.*?)\},', block.group(1), re.S)
    titles = [' '.join(t.split()) for t in fields]
    citation = yaml.safe_load(read('CITATION.cff'))
    assert sorted(titles) == sorted(ref['title'] for ref in citation['references'])
