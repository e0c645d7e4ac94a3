// Front ends of the live controls panel (sora_nb.controls): one module, two widgets, by `kind`.
//
// kind "grid"  (sora_nb.controls.ClipPreview): the x0 preview of EVERY frame of the clip at the
//   current denoising step, side by side. State: frames (bytes, F*H*W*3 uint8 RGB), shape [F, H, W],
//   scale (CSS px per pixel), label, run (generation number), step (1-based, 0 = none yet).
//   The root element carries data-run and data-step, so a page can watch for the next preview.
// kind "strip" (sora_nb.controls.HistoryStrip): thumbnails of past generations. State: thumbs
//   (bytes, the thumbnails back to back, each h*w*3 uint8 RGB), items [{h, w, label, title}],
//   scale, selected (highlighted index). A click sends {event: "select", index} to Python, which
//   restores that generation's parameters and video.
// Frames travel as binary buffers (never base64) and are drawn with putImageData.
// make, bytesOf, rgbImageData, pixelCanvas, guardKeys and coalesced come from _common.js (see read_module).

function renderGrid({ model, el }) {
  el.classList.add("sora-nb-controls-preview");
  const row = make("div", "sora-nb-controls-preview-frames", { display: "flex", gap: "2px", flexWrap: "wrap" });
  const label = make("div", "sora-nb-controls-preview-label", { fontSize: "12px", color: "#555" });
  el.append(row, label);
  let canvases = [];
  let key = "";

  function draw() {
    const [f, h, w] = model.get("shape");
    const scale = model.get("scale");
    const bytes = bytesOf(model.get("frames"));
    const k = `${f}x${h}x${w}x${scale}`;
    if (k !== key) {  // new geometry: rebuild the canvases
      row.replaceChildren();
      canvases = [];
      for (let i = 0; i < f; i++) {
        const c = pixelCanvas(h, w, scale, "sora-nb-controls-preview-frame");
        canvases.push(c);
        row.append(c);
      }
      key = k;
    }
    const n = h * w * 3;
    if (bytes.length >= f * n) {
      for (let i = 0; i < f; i++) canvases[i].getContext("2d").putImageData(rgbImageData(bytes, i * n, h, w), 0, 0);
    }
    label.textContent = model.get("label");
    el.dataset.run = String(model.get("run"));
    el.dataset.step = String(model.get("step"));
  }
  model.on("change:frames", draw);
  model.on("change:shape", draw);
  model.on("change:label", () => { label.textContent = model.get("label"); });
  model.on("change:run", draw);
  model.on("change:step", draw);
  draw();
}

function renderStrip({ model, el }) {
  el.classList.add("sora-nb-controls-history");
  const row = make("div", "sora-nb-controls-history-items",
                   { display: "flex", gap: "4px", overflowX: "auto", alignItems: "flex-start" });
  el.append(row);

  function draw() {
    const items = model.get("items");
    const bytes = bytesOf(model.get("thumbs"));
    const scale = model.get("scale");
    const selected = model.get("selected");
    const scrolled = row.scrollLeft;
    row.replaceChildren();
    let offset = 0;
    items.forEach((item, index) => {
      const n = item.h * item.w * 3;
      const cell = make("button", "sora-nb-controls-history-item", {
        padding: "2px", cursor: "pointer", background: "none", display: "flex", flexDirection: "column",
        alignItems: "center", border: index === selected ? "2px solid #1976d2" : "2px solid transparent",
      });
      cell.title = item.title;
      cell.dataset.index = String(index);
      const c = pixelCanvas(item.h, item.w, scale, "sora-nb-controls-history-thumb");
      if (bytes.length >= offset + n) c.getContext("2d").putImageData(rgbImageData(bytes, offset, item.h, item.w), 0, 0);
      offset += n;
      const caption = make("span", "sora-nb-controls-history-label", { fontSize: "10px", color: "#555" });
      caption.textContent = item.label;
      cell.append(c, caption);
      cell.addEventListener("click", () => model.send({ event: "select", index, id: item.id }));
      row.append(cell);
    });
    // keep the user's scroll, and bring the selected thumbnail into view (a new clip's, at the end)
    row.scrollLeft = scrolled;
    const chosen = row.children[selected];
    if (chosen) {
      const box = row.getBoundingClientRect();
      const cell = chosen.getBoundingClientRect();
      if (cell.left < box.left) row.scrollLeft -= box.left - cell.left;
      else if (cell.right > box.right) row.scrollLeft += cell.right - box.right;
    }
  }
  guardKeys(el);  // a clicked thumbnail has the focus: "d d" must not delete the cell
  const redraw = coalesced(draw);  // a new clip changes items, thumbs and selected in one message
  model.on("change:items", redraw);
  model.on("change:thumbs", redraw);
  model.on("change:selected", redraw);
  draw();
}

function render(props) {
  return props.model.get("kind") === "strip" ? renderStrip(props) : renderGrid(props);
}

export default { render };
