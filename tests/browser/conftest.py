"""Fixtures for browser tests: a fresh JupyterLab and a fresh headless Chromium page per test.

    @pytest.mark.browser
    def test_something(lab, page):
        write_notebook(lab.root / "t.ipynb", ["1 + 1"])
        open_notebook(page, lab, "t.ipynb")
        run_all_cells(page)

See harness.py for what the server and the browser guarantee (and for use outside pytest).
"""

from __future__ import annotations

import pytest

from harness import chromium_page, jupyter_lab, require_chromium


@pytest.fixture
def lab(tmp_path_factory):
    """A JupyterLab server whose root folder is a fresh temporary folder (``lab.root``).

    One server per test: a shared server restores the previous test's open notebooks into the
    workspace, and "Run All" then went to the wrong tab.
    """
    require_chromium()  # no point starting a server the browser cannot reach
    with jupyter_lab(tmp_path_factory.mktemp("lab")) as server:
        yield server


@pytest.fixture
def page():
    """A Playwright page in headless Chromium with a fresh profile."""
    with chromium_page() as p:
        yield p
