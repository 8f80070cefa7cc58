// The four-colour risk map: one SVG group per risk unit, placed by x_pct/y_pct on the layout
// image, else by latitude/longitude normalised over the units, else on a plain grid. Colour
// changes touch one attribute of one group; the map is drawn once.

import { get } from './api.js';
import { t } from './i18n.js';

const NS = 'http://www.w3.org/2000/svg';
const W = 1000, H = 600, BOX_W = 190, BOX_H = 64;
const groups = new Map();
let layoutUrl = null;

function el(name, attrs) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function places(units) {
  const withPct = units.filter(u => u.x_pct != null && u.y_pct != null);
  const withGeo = units.filter(u => u.latitude != null && u.longitude != null);
  const out = new Map();
  if (withPct.length) for (const u of withPct) out.set(u.id, [u.x_pct / 100 * W, u.y_pct / 100 * H]);
  else if (withGeo.length > 1) {
    const lats = withGeo.map(u => u.latitude), lons = withGeo.map(u => u.longitude);
    const [la0, la1, lo0, lo1] = [Math.min(...lats), Math.max(...lats), Math.min(...lons), Math.max(...lons)];
    for (const u of withGeo) {
      const x = lo1 > lo0 ? (u.longitude - lo0) / (lo1 - lo0) : 0.5;
      const y = la1 > la0 ? 1 - (u.latitude - la0) / (la1 - la0) : 0.5;
      out.set(u.id, [120 + x * (W - 240), 60 + y * (H - 120)]);
    }
  }
  // Whatever has no place goes on a grid.
  const rest = units.filter(u => !out.has(u.id));
  const cols = Math.max(1, Math.ceil(Math.sqrt(rest.length * W / H)));
  rest.forEach((u, i) => {
    const rows = Math.ceil(rest.length / cols);
    out.set(u.id, [(i % cols + 0.5) * W / cols, (Math.floor(i / cols) + 0.5) * H / Math.max(rows, 1)]);
  });
  return out;
}

export async function drawMap(svg, risk) {
  svg.replaceChildren();
  groups.clear();
  try {
    const blob = await get('/api/v1/site/layout');
    if (layoutUrl) URL.revokeObjectURL(layoutUrl);
    layoutUrl = URL.createObjectURL(blob);
    svg.append(el('image', { href: layoutUrl, x: 0, y: 0, width: W, height: H, preserveAspectRatio: 'xMidYMid meet' }));
  } catch {
    const grid = el('g', { class: 'grid' });
    for (let x = 50; x < W; x += 50) grid.append(el('line', { x1: x, y1: 0, x2: x, y2: H }));
    for (let y = 50; y < H; y += 50) grid.append(el('line', { x1: 0, y1: y, x2: W, y2: y }));
    svg.append(grid);
  }
  const colours = new Map((risk.units || []).map(u => [u.id, u]));
  const where = places(risk.unit_places || []);
  for (const place of risk.unit_places || []) {
    const unit = colours.get(place.id) || {};
    const [cx, cy] = where.get(place.id);
    const g = el('g', { class: 'unit', 'data-unit': place.id, 'data-colour': unit.colour || unit.static_colour || 'blue', tabindex: 0 });
    const x = Math.min(Math.max(cx - BOX_W / 2, 2), W - BOX_W - 2), y = Math.min(Math.max(cy - BOX_H / 2, 2), H - BOX_H - 2);
    g.append(el('rect', { x, y, width: BOX_W, height: BOX_H, rx: 8 }));
    const name = el('text', { x: x + BOX_W / 2, y: y + 27 });
    name.textContent = unit.name || place.id;
    const colour = el('text', { x: x + BOX_W / 2, y: y + 49, class: 'colour-label' });
    const title = el('title');
    g.append(name, colour, title);
    svg.append(g);
    g.addEventListener('click', () => { if (place.points?.length) location.hash = `#/point/${encodeURIComponent(place.points[0])}`; });
    groups.set(place.id, { g, colour, title, place, name: unit.name || place.id });
    setColour(place.id, g.dataset.colour, false);
  }
}

export function setColour(id, colour, flash = true) {
  const u = groups.get(id);
  if (!u || !colour) return;
  const changed = u.g.dataset.colour !== colour;
  u.g.dataset.colour = colour;
  u.colour.textContent = t(`colour.${colour}`);
  u.title.textContent = `${u.name}: ${t(`colour.${colour}`)} · ${(u.place.points || []).join(', ')}`;
  if (changed && flash) {
    u.g.classList.remove('changed');
    void u.g.getBoundingClientRect();
    u.g.classList.add('changed');
  }
}

/** Apply the units of a site status (only the ones that changed are touched). */
export function applyStatus(status) {
  for (const u of status.units || []) setColour(u.id, u.colour);
}

export function relabel() {
  for (const [id, u] of groups) setColour(id, u.g.dataset.colour, false);
}
