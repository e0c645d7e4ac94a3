// Helpers shared by every widget module in this folder. sora_nb.frontend.read_module puts this file
// in front of the module it reads (anywidget takes one module string), so they are defined once here.

function make(tag, className, style = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  Object.assign(node.style, style);
  return node;
}

function bytesOf(view) {
  if (!view || !view.byteLength) return new Uint8Array(0);
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

// One h*w RGB frame starting at byte `offset` of `bytes`, as ImageData for putImageData.
function rgbImageData(bytes, offset, h, w) {
  const rgba = new Uint8ClampedArray(h * w * 4);
  for (let i = 0, j = offset; i < h * w; i++, j += 3) {
    rgba[4 * i] = bytes[j];
    rgba[4 * i + 1] = bytes[j + 1];
    rgba[4 * i + 2] = bytes[j + 2];
    rgba[4 * i + 3] = 255;
  }
  return new ImageData(rgba, w, h);
}

function pixelCanvas(h, w, scale, className) {
  const c = make("canvas", className, { imageRendering: "pixelated", width: `${w * scale}px`,
                                        height: `${h * scale}px`, display: "block" });
  c.width = w;
  c.height = h;
  return c;
}
