"""notebooks/02_shapes_world.ipynb runs top to bottom and shows what it should."""

import re
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "02_shapes_world.ipynb"


def _text(nb) -> str:
    """All text, HTML and image types the notebook output."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            data = out.get("data", {})
            parts.append(data.get("text/plain", "") + data.get("text/html", "") + " ".join(data))
    return "\n".join(parts)


def test_shapes_world_notebook(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "stored outputs must be cleared"
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors
    text = _text(nb)
    assert "(16, 64, 64, 3) uint8 8 2.0" in text
    assert "data:image/gif;base64" in text and "image/png" in text  # the clip grids and the plots
    assert "held-out colour + shape:" in text and "motion_first" in text
    truth = float(re.search(r"overall on ground truth: ([0-9.]+)", text).group(1))
    noise = float(re.search(r"overall on noise: ([0-9.]+)", text).group(1))
    assert truth >= 0.98 and noise <= 0.1
    # the bars table: 40 perfect clips hold the .90 bars but cannot show .95; reversed clips miss motion
    bars = re.search(r"ground truth\s+colour\s+1\.0+\s+0\.912\s+1\.0+\s+40\s+0\.95\s+above, within noise", text)
    assert bars and re.search(r"time-reversed colour.*\n(?:.*\n)*?\s+motion\s+0\.158\s+0\.057\s+0\.37\d*\s+20\s+0\.90?\s+missed",
                              text)
