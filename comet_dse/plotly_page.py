"""Self-contained, small Plotly pages: plotly.js (4.8 MB) embedded gzip-compressed and
base85-encoded (1.8 MB), unpacked by the browser's `DecompressionStream`, then every figure
drawn from its JSON into its div. The tune report, the validation report and the simulated
timeline all use it, so they open offline and stay a third of the size of plotly's own
`to_html` pages."""

from __future__ import annotations

import json
import zlib
from functools import lru_cache

import numpy as np

# plotly.js in base85 over an alphabet that needs no escaping in HTML or a JS string
B85_ALPHABET = "".join(c for c in map(chr, range(33, 127)) if c not in "\"'<>&`\\")[:85]


def base85(data: bytes) -> str:
    padded = data + b"\0" * (-len(data) % 4)
    words = np.frombuffer(padded, dtype=">u4").astype(np.int64)
    digits = np.empty((len(words), 5), dtype=np.int64)
    for i in range(4, -1, -1):
        words, digits[:, i] = np.divmod(words, 85)
    return np.frombuffer(B85_ALPHABET.encode(), dtype=np.uint8)[digits.ravel()].tobytes().decode("ascii")


@lru_cache(maxsize=1)
def packed_plotlyjs() -> tuple[str, int]:
    """(plotly.js gzip-compressed and base85-encoded, the compressed size in bytes)."""
    from plotly.offline import get_plotlyjs

    packed = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip stream, what DecompressionStream("gzip") reads
    data = packed.compress(get_plotlyjs().encode()) + packed.flush()
    return base85(data), len(data)


def plotly_page(title: str, body: str, figures: dict[str, str], head: str = "") -> str:
    """A whole page: `body` (HTML holding an element per figure id, e.g. `<div id="x-plot">`),
    then plotly.js unpacked and each figure (id -> its `fig.to_json()`) drawn into its element."""
    packed, size = packed_plotlyjs()
    # "</" inside a script would end it early (a title with "</script>"): JSON allows "<\/" for it
    safe = {div: figure.replace("</", "<\\/") for div, figure in figures.items()}
    draws = "\n".join(f"  draw({json.dumps(div)}, {figure});" for div, figure in safe.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>{head}</head><body>
{body}
<p id="loading">unpacking plotly.js…</p>
<script type="application/octet-stream" id="plotlyjs-gzip-base85">{packed}</script>
<script>
(async () => {{
  const alphabet = {json.dumps(B85_ALPHABET)}, text = document.getElementById("plotlyjs-gzip-base85").textContent.trim();
  const value = new Uint8Array(128);
  for (let i = 0; i < 85; i++) value[alphabet.charCodeAt(i)] = i;
  const bytes = new Uint8Array(text.length / 5 * 4);
  for (let i = 0, o = 0; i < text.length; i += 5) {{
    let v = 0;
    for (let j = 0; j < 5; j++) v = v * 85 + value[text.charCodeAt(i + j)];
    bytes[o++] = v >>> 24; bytes[o++] = (v >>> 16) & 255; bytes[o++] = (v >>> 8) & 255; bytes[o++] = v & 255;
  }}
  const stream = new Blob([bytes.subarray(0, {size})]).stream().pipeThrough(new DecompressionStream("gzip"));
  (0, eval)(await new Response(stream).text());  // defines window.Plotly
  document.getElementById("loading").remove();
  const draw = (div, figure) => Plotly.newPlot(div, figure.data, figure.layout, {{responsive: true}});
{draws}
}})();
</script></body></html>
"""
