"""Drive a real JupyterLab in headless Chromium, for browser tests of sora_nb's widgets.

A widget test writes a notebook, runs it in JupyterLab the way a person would (the *Run > Run All
Cells* menu), then looks at and pokes the rendered widget with Playwright::

    from harness import chromium_page, jupyter_lab, open_notebook, run_all_cells, write_notebook

    with jupyter_lab(tmp_path) as lab, chromium_page() as page:
        write_notebook(tmp_path / "demo.ipynb", ["import sora_nb", "sora_nb.inspect(video)"])
        open_notebook(page, lab, "demo.ipynb")
        run_all_cells(page)                         # waits until every cell has run
        assert cell_errors(page) == []
        page.locator(".sora-nb-inspector").wait_for()

In pytest, use the fixtures of ``tests/browser/conftest.py`` instead: ``lab`` (a fresh JupyterLab
per test: a shared server restores the previous test's open tabs into its workspace) and ``page`` (a
fresh Chromium profile per test). :func:`save_screenshot` and :func:`save_json` keep artifacts in
``test-artifacts/`` (gitignored).

What it guarantees:

- JupyterLab is this Python's (``sys.executable -m jupyterlab``, so the venv's kernel, widgets and
  anywidget), on a free port, with a random token, ``root_dir`` the given folder, and its config,
  runtime, settings and workspace folders inside that folder, so the user's own JupyterLab state
  never leaks in. Its log is ``<root>/jupyterlab.log``. On exit the server's process group (server
  and kernels, all started here) gets SIGTERM, then SIGKILL after 20 s.
- Chromium is Debian's (``/usr/bin/chromium``; override with ``SORA_NB_CHROMIUM``), headless, with a
  fresh user-data folder and no network chatter (``CHROMIUM_ARGS``). Playwright's own browser
  downloads are never used. When Chromium is missing, :func:`require_chromium` fails the test under
  ``CI=true`` and skips it otherwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest

CHROMIUM = Path(os.environ.get("SORA_NB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"


def require_chromium() -> Path:
    """Path of the Chromium binary; fails the test under ``CI=true`` when it is missing, else skips it."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    message = (f"browser tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium; or set "
               "SORA_NB_CHROMIUM); `make test` installs it when run as root")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


# -- JupyterLab -----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Lab:
    """A running JupyterLab server."""

    url: str                    # e.g. "http://127.0.0.1:8899/"
    token: str
    root: Path                  # its root_dir: notebooks and their working folder
    process: subprocess.Popen
    log: Path

    def notebook_url(self, name: str) -> str:
        """URL that opens ``name`` (relative to ``root``) in the JupyterLab UI."""
        return f"{self.url}lab/tree/{name}?token={self.token}"

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log (for failure messages)."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(lab: Lab, timeout: float) -> None:
    """Poll ``/api/status`` until the server answers; raise with its log if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lab.process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with status {lab.process.returncode}:\n{lab.log_tail()}")
        try:
            with urllib.request.urlopen(f"{lab.url}api/status?token={lab.token}", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"JupyterLab did not answer within {timeout:.0f} s:\n{lab.log_tail()}")


def _stop(process: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the server's process group (server and its kernels), SIGKILL it after ``grace`` s."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def jupyter_lab(root: Path, *, timeout: float = 90.0, extra_args: Sequence[str] = ()) -> Iterator[Lab]:
    """Run JupyterLab on ``root`` for the duration of the block (see the module docstring)."""
    root = Path(root).resolve()
    state = root / ".jupyter-state"
    for sub in ("config", "runtime", "settings", "workspaces", "data"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    token, port = secrets.token_hex(16), free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(state / "config"), JUPYTER_RUNTIME_DIR=str(state / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(state / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"),
               JUPYTER_DATA_DIR=str(state / "data"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])))
    cmd = [sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser", f"--ServerApp.token={token}",
           f"--port={port}", "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", *extra_args]
    log = root / "jupyterlab.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    lab = Lab(url=f"http://127.0.0.1:{port}/", token=token, root=root, process=process, log=log)
    try:
        _wait_until_up(lab, timeout)
        yield lab
    finally:
        _stop(process)


# -- Chromium -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def chromium_page(*, width: int = 1400, height: int = 1200) -> Iterator[Any]:
    """A Playwright ``Page`` in headless Debian Chromium with a fresh profile, closed after the block."""
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="sora-nb-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=str(executable), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height})
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


# -- notebooks ------------------------------------------------------------------------------------------
def write_notebook(path: Path, cells: Sequence[str]) -> Path:
    """Write an nbformat-4 notebook of code ``cells`` with the python3 kernelspec (no kernel prompt)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nbformat.write(nb, str(path))
    return path


KERNEL_IDLE = """() => Array.from(document.querySelectorAll('.jp-StatusBar-TextItem')).some(
  (e) => (e.title || '').startsWith('Change kernel') && !e.textContent.includes('No Kernel')
         && /\\|\\s*Idle\\s*$/.test(e.textContent))"""


def open_notebook(page: Any, lab: Lab, name: str, *, timeout: float = 90.0) -> None:
    """Open notebook ``name`` in the JupyterLab UI; wait until its cells show and its kernel is idle."""
    page.goto(lab.notebook_url(name), wait_until="domcontentloaded", timeout=timeout * 1000)
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(state="visible", timeout=timeout * 1000)
    wait_for_kernel_idle(page, timeout=timeout)


def wait_for_kernel_idle(page: Any, *, timeout: float = 90.0) -> None:
    """Wait until the status bar says the notebook's kernel is started and idle."""
    page.wait_for_function(KERNEL_IDLE, timeout=timeout * 1000, polling=200)


def _menu(page: Any, menu: str, item: str) -> None:
    """Click ``menu`` in the menu bar, then ``item`` in it."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{re.escape(menu)}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()


def code_prompts(page: Any) -> list[str]:
    """The execution prompts of the open notebook's code cells, e.g. ``["[1]:", "[*]:", "[ ]:"]``."""
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt").all_inner_texts()


def run_all_cells(page: Any, *, timeout: float = 120.0) -> None:
    """*Run > Run All Cells*, then wait until every code cell shows an execution count."""
    page.locator(".jp-NotebookPanel .jp-Cell").first.click()  # focus the notebook so the menu acts on it
    _menu(page, "Run", "Run All Cells")
    deadline = time.monotonic() + timeout
    prompts: list[str] = []
    while time.monotonic() < deadline:
        prompts = [p.strip() for p in code_prompts(page)]
        if prompts and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts):
            return
        page.wait_for_timeout(250)
    raise TimeoutError(f"cells did not finish within {timeout:.0f} s; prompts: {prompts}")


def cell_errors(page: Any) -> list[str]:
    """Text of every error output (tracebacks) in the open notebook; warnings on stderr are left out."""
    stderr = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
    return [t for t in stderr if "Traceback" in t or re.search(r"^\w*(Error|Exception)\b", t, re.M)]


def save_screenshot(target: Any, name: str) -> Path:
    """Screenshot a page or locator to ``test-artifacts/<name>.png``; returns the path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    target.screenshot(path=str(path))
    return path


def save_json(name: str, data: Any) -> Path:
    """Write ``data`` to ``test-artifacts/<name>.json`` (measurements worth keeping)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=1))
    return path
