"""The committed library must equal `nbdev_export` of the committed notebooks, and the notebooks must be clean."""
import shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _copy(tmp):
    shutil.copytree(ROOT / 'nbs', tmp / 'nbs')
    shutil.copy(ROOT / 'settings.ini', tmp / 'settings.ini')
    (tmp / 'timer1_lib').mkdir()
    return tmp


def test_library_is_export_of_notebooks(tmp_path):
    tmp = _copy(tmp_path)
    subprocess.run([BIN / 'nbdev_export'], cwd=tmp, check=True, capture_output=True)
    made = sorted(p.name for p in (tmp / 'timer1_lib').glob('*.py'))
    have = sorted(p.name for p in (ROOT / 'timer1_lib').glob('*.py'))
    assert made == have, f'modules differ: export makes {made}, repo has {have}'
    differ = [n for n in made if (tmp / 'timer1_lib' / n).read_text() != (ROOT / 'timer1_lib' / n).read_text()]
    assert not differ, f'timer1_lib/ is not the export of nbs/ for {differ}: run nbdev_export and commit'


def test_notebooks_are_clean(tmp_path):
    tmp = _copy(tmp_path)
    subprocess.run([BIN / 'nbdev_clean'], cwd=tmp, check=True, capture_output=True)
    dirty = [p.name for p in sorted((ROOT / 'nbs').glob('*.ipynb'))
             if (tmp / 'nbs' / p.name).read_text() != p.read_text()]
    assert not dirty, f'notebooks not clean: {dirty}: run nbdev_clean and commit'


def test_clean_keeps_papermill_tags(tmp_path):
    import json
    tmp = _copy(tmp_path)
    nb = {'cells': [{'cell_type': 'code', 'execution_count': 3, 'id': 'a1',
                     'metadata': {'tags': ['parameters'], 'collapsed': True},
                     'outputs': [], 'source': ['x = 1']}],
          'metadata': {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}},
          'nbformat': 4, 'nbformat_minor': 5}
    (tmp / 'nbs' / 'zz_tags.ipynb').write_text(json.dumps(nb))
    subprocess.run([BIN / 'nbdev_clean', '--fname', tmp / 'nbs' / 'zz_tags.ipynb'], cwd=tmp, check=True,
                   capture_output=True)
    cell = json.loads((tmp / 'nbs' / 'zz_tags.ipynb').read_text())['cells'][0]
    assert cell['metadata'] == {'tags': ['parameters']} and cell['execution_count'] is None


def test_notebook_tests_leave_no_scratch_behind(tmp_path):
    ("nbdev_test of the notebooks that make scratch folders leaves nothing in TMPDIR "
     "(CI once ran out of disk on leftovers).")
    import os
    scratch = tmp_path / 'tmpdir'; scratch.mkdir()
    env = os.environ | {'TMPDIR': str(scratch), 'OMP_NUM_THREADS': '1'}
    nbs = ['02_data', '05_model', '06_infer', 'evaluate']
    for nb in nbs:
        r = subprocess.run([BIN / 'nbdev_test', '--path', ROOT / 'nbs' / f'{nb}.ipynb'], cwd=ROOT, env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0, f'nbdev_test {nb}: {r.stderr[-2000:]}'
    # torch's own compile cache (torchinductor_<user>) is shared between runs by design; anything else is a leak
    left = sorted(p.name for p in scratch.iterdir() if not p.name.startswith('torchinductor_'))
    assert not left, f'nbdev_test of {nbs} left {left} in TMPDIR'
