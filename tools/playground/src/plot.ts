/** A line chart drawn into an inline SVG: no chart library, just axes, a few ticks and a polyline. */

const SVG = 'http://www.w3.org/2000/svg';
const MARGIN = { left: 44, right: 10, top: 8, bottom: 28 };

export interface Point {
  x: number;
  y: number;
}

/** Redraws `svg` with `points` (x ascending), y from 0; `xLabel` / `yLabel` name the axes. */
export function drawPlot(svg: SVGSVGElement, points: readonly Point[], xLabel: string, yLabel: string): void {
  const width = svg.width.baseVal.value;
  const height = svg.height.baseVal.value;
  const w = width - MARGIN.left - MARGIN.right;
  const h = height - MARGIN.top - MARGIN.bottom;
  svg.replaceChildren();

  const x0 = points[0]?.x ?? 0;
  const x1 = Math.max(points.at(-1)?.x ?? 1, x0 + 1);
  const yMax = niceCeil(Math.max(...points.map((p) => p.y), 1e-3));
  const px = (x: number) => MARGIN.left + ((x - x0) / (x1 - x0)) * w;
  const py = (y: number) => MARGIN.top + h - (y / yMax) * h;

  for (let i = 0; i <= 4; i++) {
    const y = (yMax * i) / 4;
    add(svg, 'line', { x1: MARGIN.left, x2: MARGIN.left + w, y1: py(y), y2: py(y), stroke: i ? '#e3e7eb' : '#8a949e' });
    add(svg, 'text', { x: MARGIN.left - 4, y: py(y) + 3, 'text-anchor': 'end' }).textContent = formatTick(y);
  }
  for (const x of [x0, Math.round((x0 + x1) / 2), x1]) {
    add(svg, 'text', { x: px(x), y: MARGIN.top + h + 12, 'text-anchor': 'middle' }).textContent = String(x);
  }
  add(svg, 'text', { x: MARGIN.left + w / 2, y: height - 3, 'text-anchor': 'middle' }).textContent = xLabel;
  add(svg, 'text', { x: 10, y: MARGIN.top + h / 2, transform: `rotate(-90 10 ${MARGIN.top + h / 2})`, 'text-anchor': 'middle' }).textContent = yLabel;
  if (points.length === 0) return;
  const line = points.map((p) => `${px(p.x).toFixed(1)},${py(p.y).toFixed(1)}`).join(' ');
  add(svg, 'polyline', { points: line, fill: 'none', stroke: '#4c7cf0', 'stroke-width': 1.5 });
}

function add(parent: SVGElement, tag: string, attrs: Record<string, string | number>): SVGElement {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  parent.append(el);
  return el;
}

/** The smallest 1, 2 or 5 times a power of ten at or above v, so the y ticks are round numbers. */
function niceCeil(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v));
  return ([1, 2, 5, 10].find((m) => m * p >= v) ?? 10) * p;
}

function formatTick(v: number): string {
  return v === 0 || v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(2);
}
