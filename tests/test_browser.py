"""Real-browser test of nbs/explore.ipynb: JupyterLab on loopback, Debian's Chromium through Playwright.

Starts `jupyter lab` from the project venv on 127.0.0.1 with a random token, opens nbs/explore.ipynb, runs all cells
from the Run menu, checks that the frame image and the plotly timeline rendered, moves the slider with the keyboard
(the frame and the playhead change), clicks the timeline (click-to-seek changes the frame), presses play (time and
frame advance), checks that no widget error shows, and saves screenshots under artifacts/browser/. \
Installs Chromium with apt-get when it is missing.
"""
import json, os, secrets, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NB = 'nbs/explore.ipynb'
OUT = ROOT / 'artifacts' / 'browser'
CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync',
                 '--disable-dev-shm-usage']
TIMEOUT_MS = 120_000
WIDGET_ERRORS = ('Error displaying widget', 'Failed to load model class', 'Error rendering',
                 'Traceback (most recent call last)')

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]


def _ensure_chromium() -> str:
    "Debian's Chromium at /usr/bin/chromium, installed with apt-get when missing (root, or passwordless sudo)."
    if Path(CHROMIUM).exists(): return CHROMIUM
    sudo = [] if os.geteuid() == 0 else (['sudo', '-n'] if shutil.which('sudo') else None)
    if sudo is None or not shutil.which('apt-get'):
        pytest.fail(f'{CHROMIUM} is missing and cannot be installed here (needs root or sudo and apt-get): '
                    'run `apt-get install chromium`')
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    lock = ['-o', 'DPkg::Lock::Timeout=300']
    for cmd in (sudo + ['apt-get', *lock, 'update', '-qq'],
                sudo + ['apt-get', *lock, 'install', '-y', '-qq', 'chromium']):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if r.returncode != 0: pytest.fail(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr[-2000:]}")
    assert Path(CHROMIUM).exists(), f'apt-get installed chromium but {CHROMIUM} is not there'
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _lab_settings(d: Path) -> Path:
    ("User settings: start the notebook's kernel without asking, never autosave (the notebook must stay clean), "
     "no news.")
    us = d / 'settings'
    for ext, name, val in (('notebook-extension', 'tracker', {'autoStartDefaultKernel': True}),
                           ('docmanager-extension', 'plugin', {'autosave': False}),
                           ('apputils-extension', 'notification', {'fetchNews': 'false', 'checkForUpdates': False})):
        p = us / '@jupyterlab' / ext / f'{name}.jupyterlab-settings'
        p.parent.mkdir(parents=True, exist_ok=True); p.write_text(json.dumps(val))
    return us


@pytest.fixture
def lab(tmp_path):
    "A JupyterLab server on 127.0.0.1 serving the repo; yields (base url, token); always stopped."
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / 'config'), JUPYTER_RUNTIME_DIR=str(tmp_path / 'runtime'),
               JUPYTER_PLATFORM_DIRS='1', PYTHONUNBUFFERED='1', MPLBACKEND='Agg')
    env['PATH'] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    cmd = [str(BIN / 'jupyter'), 'lab', '--no-browser', '--ip=127.0.0.1', f'--port={port}', '--port-retries=0',
           f'--ServerApp.token={token}', f'--ServerApp.root_dir={ROOT}', '--allow-root',
           f'--LabApp.user_settings_dir={_lab_settings(tmp_path)}',
           f'--LabApp.workspaces_dir={tmp_path / "workspaces"}',
           '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate', '--LabApp.news_url=',
           '--LabApp.extension_manager=readonly']
    log = open(tmp_path / 'jupyter.log', 'w')
    srv = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    nb_path, ckpt_dir = ROOT / NB, ROOT / 'nbs' / '.ipynb_checkpoints'
    nb_before, had_ckpt = nb_path.read_bytes(), ckpt_dir.exists()
    try:
        t0, url = time.time(), f'http://127.0.0.1:{port}'
        while True:
            if srv.poll() is not None:
                pytest.fail(f'jupyter lab exited with {srv.returncode}:\n'
                            f'{(tmp_path / "jupyter.log").read_text()[-3000:]}')
            try:
                with urllib.request.urlopen(f'{url}/api/status?token={token}', timeout=2) as r:
                    if r.status == 200: break
            except OSError: pass
            if time.time() - t0 > 120: pytest.fail(f'jupyter lab did not answer on {url} within 120 s')
            time.sleep(0.5)
        yield url, token, time.time() - t0
    finally:
        try: os.killpg(srv.pid, signal.SIGTERM)
        except ProcessLookupError: pass
        try: srv.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(srv.pid, signal.SIGKILL); srv.wait(10)
        log.close()
        if nb_path.read_bytes() != nb_before:      # never leave outputs in the committed notebook
            nb_path.write_bytes(nb_before)
        if not had_ckpt and ckpt_dir.exists(): shutil.rmtree(ckpt_dir, ignore_errors=True)


def _img_src(page, out) -> str:
    return out.locator('img').first.get_attribute('src') or ''


def test_explore_notebook_in_chromium(lab):
    from playwright.sync_api import sync_playwright
    chromium = _ensure_chromium()
    url, token, t_server = lab
    OUT.mkdir(parents=True, exist_ok=True)
    times, console_errors = {'server_start_s': round(t_server, 1)}, []
    t0 = time.time()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            ctx = browser.new_context(viewport={'width': 1600, 'height': 1100})
            page = ctx.new_page()
            page.on('console', lambda m: console_errors.append(m.text) if m.type == 'error' else None)
            page.goto(f'{url}/lab/tree/{NB}?token={token}', timeout=TIMEOUT_MS)
            page.wait_for_selector('.jp-NotebookPanel .jp-Cell', timeout=TIMEOUT_MS)
            page.wait_for_selector('.jp-StatusBar-TextItem:has-text("| Idle")', timeout=TIMEOUT_MS)
            times['lab_open_s'] = round(time.time() - t0, 1)

            t1 = time.time()                       # Run > Run All Cells, as a person would
            page.click('.lm-MenuBar-itemLabel:text-is("Run")', timeout=TIMEOUT_MS)
            page.click('.lm-Menu-itemLabel:text-is("Run All Cells")', timeout=TIMEOUT_MS)
            out = page.locator('.jp-OutputArea-output:has(.timer1-scrubber)').first
            out.locator('img').first.wait_for(state='visible', timeout=TIMEOUT_MS)
            out.locator('.js-plotly-plot').first.wait_for(state='visible', timeout=TIMEOUT_MS)
            page.wait_for_function("() => [...document.querySelectorAll('.jp-Cell .jp-InputArea-prompt')]"
                                   ".every(e => !e.textContent.includes('*'))", timeout=TIMEOUT_MS)
            times['run_all_s'] = round(time.time() - t1, 1)

            # the frame is a real decoded image, the timeline has its tracks and the GT / run segments
            img = out.locator('img').first
            page.wait_for_function('(el) => el.complete && el.naturalWidth > 0', arg=img.element_handle(),
                                   timeout=TIMEOUT_MS)
            assert img.evaluate('el => el.naturalWidth') >= 200
            plot = out.locator('.js-plotly-plot').first
            ticks = plot.locator('.ytick text').all_text_contents()
            assert ticks[:2] == ['ground truth', 'example: close'], ticks
            assert plot.locator('.shapelayer path').count() >= 5        # GT band + GT + 3 parsed answers + thinking
            assert 'person sitting down in a chair.' in out.inner_text()
            playhead = plot.locator('.scatterlayer .trace').last.locator('path.js-line')
            src0, line0 = _img_src(page, out), playhead.get_attribute('d')
            assert src0, 'the frame image has no src'

            # move the slider with the keyboard: the frame and the playhead change
            t2 = time.time()
            handle = out.locator('.widget-slider .noUi-handle').first
            handle.click()
            for _ in range(12): handle.press('ArrowRight')
            page.wait_for_function('([el, s]) => el.getAttribute("src") !== s', arg=[img.element_handle(), src0],
                                   timeout=30_000)
            page.wait_for_function('([el, d]) => el.getAttribute("d") !== d', arg=[playhead.element_handle(), line0],
                                   timeout=30_000)
            readout = out.locator('.widget-readout').first.inner_text().strip()
            assert float(readout) > 0, readout
            times['slider_to_new_frame_s'] = round(time.time() - t2, 2)
            src1 = _img_src(page, out)

            # click-to-seek: a click at ~70% of the timeline's width jumps there
            t3 = time.time()
            drag = plot.locator('.nsewdrag').first
            drag.scroll_into_view_if_needed()
            box = drag.bounding_box()
            page.mouse.click(box['x'] + 0.7 * box['width'], box['y'] + 0.94 * box['height'])
            page.wait_for_function('([el, s]) => el.getAttribute("src") !== s', arg=[img.element_handle(), src1],
                                   timeout=30_000)
            page.wait_for_function('(el) => parseFloat(el.textContent) > 20',
                                   arg=out.locator('.widget-readout').first.element_handle(), timeout=30_000)
            times['click_to_new_frame_s'] = round(time.time() - t3, 2)

            # the play button plays: the time and the frame advance on their own
            t4 = time.time()
            readout = out.locator('.widget-readout').first
            r0, src2 = float(readout.inner_text()), _img_src(page, out)
            play = out.locator('.widget-play button').first
            play.click()
            page.wait_for_function('([el, r]) => parseFloat(el.textContent) > r + 0.6',
                                   arg=[readout.element_handle(), r0], timeout=30_000)
            play.click()                               # pause
            assert _img_src(page, out) != src2
            times['play_advances_s'] = round(time.time() - t4, 2)

            # the evaluation browser, when the machine has an evaluation run of the embedded default
            brw = page.locator('.jp-OutputArea-output:has(.timer1-browser)')
            if brw.count():
                brw.first.locator('.js-plotly-plot').first.wait_for(state='visible', timeout=TIMEOUT_MS)
                assert 'case 1 / ' in brw.first.inner_text()
                brw.first.screenshot(path=str(OUT / 'explore_browser.png'))
            times['eval_browser_shown'] = bool(brw.count())

            text = page.locator('.jp-NotebookPanel').inner_text()
            bad = [e for e in WIDGET_ERRORS if e in text]
            out.screenshot(path=str(OUT / 'explore_scrubber.png'))
            out.scroll_into_view_if_needed()
            page.screenshot(path=str(OUT / 'explore.png'))
            assert not bad, f'widget errors in the page: {bad}'
            assert not [e for e in console_errors
                        if 'widget' in e.lower() or 'model class' in e.lower()], console_errors
        except BaseException:
            try: page.screenshot(path=str(OUT / 'explore_failure.png'))
            except Exception: pass
            raise
        finally:
            browser.close()
    times['total_s'] = round(time.time() - t0 + t_server, 1)
    (OUT / 'explore_timing.json').write_text(json.dumps(times, indent=1) + '\n')
    print('browser test timings:', times)
