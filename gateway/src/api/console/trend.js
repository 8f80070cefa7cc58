// A trend chart on <canvas>: the min–max band and mean of downsampled history, then raw
// readings appended live. Redrawing one canvas is cheap; nothing else on the page moves.

export class Trend {
  constructor(canvas) {
    this.canvas = canvas;
    this.series = []; // [t_ms, min, max, mean]
    this.rangeMs = 600000;
    this.unit = '';
  }

  reset(rangeMs, unit) { this.series = []; this.rangeMs = rangeMs; this.unit = unit || ''; }

  addBuckets(buckets) {
    for (const b of buckets) if (b.count > 0) this.series.push([b.start_ms, b.min, b.max, b.mean]);
  }

  addReadings(rows) {
    for (const r of rows) if (r.value != null) this.series.push([r.ts_ms, r.value, r.value, r.value]);
    const from = Date.now() - this.rangeMs;
    let i = 0;
    while (i < this.series.length && this.series[i][0] < from) i++;
    if (i) this.series.splice(0, i);
  }

  last() { return this.series.length ? this.series[this.series.length - 1][0] : null; }

  draw() {
    const c = this.canvas, ctx = c.getContext('2d');
    const ratio = window.devicePixelRatio || 1;
    const w = c.clientWidth || 1000, h = c.clientHeight || 360;
    if (c.width !== Math.round(w * ratio)) { c.width = Math.round(w * ratio); c.height = Math.round(h * ratio); }
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const pad = { l: 56, r: 12, t: 12, b: 26 };
    const t1 = Date.now(), t0 = t1 - this.rangeMs;
    const pts = this.series;
    let lo = Infinity, hi = -Infinity;
    for (const p of pts) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[2]); }
    if (!isFinite(lo)) { lo = 0; hi = 1; }
    if (hi - lo < 1e-9) { hi += 1; lo -= 1; }
    const span = hi - lo; lo -= span * 0.05; hi += span * 0.05;
    const X = t => pad.l + (t - t0) / (t1 - t0) * (w - pad.l - pad.r);
    const Y = v => pad.t + (1 - (v - lo) / (hi - lo)) * (h - pad.t - pad.b);
    ctx.font = '11px system-ui, sans-serif';
    ctx.strokeStyle = '#e5e7eb'; ctx.fillStyle = '#6b7280'; ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const v = lo + (hi - lo) * i / 4, y = Y(v);
      ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(w - pad.r, y); ctx.stroke();
      ctx.fillText(v.toFixed(Math.abs(hi - lo) < 10 ? 2 : 1), 4, y + 4);
    }
    for (let i = 0; i <= 4; i++) {
      const t = t0 + (t1 - t0) * i / 4;
      const label = new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: this.rangeMs <= 3600000 ? '2-digit' : undefined });
      ctx.fillText(label, Math.min(X(t), w - 60), h - 8);
    }
    ctx.fillText(this.unit, 4, 10);
    if (!pts.length) return;
    ctx.fillStyle = 'rgba(25,118,210,0.18)';
    ctx.beginPath();
    pts.forEach((p, i) => (i ? ctx.lineTo(X(p[0]), Y(p[2])) : ctx.moveTo(X(p[0]), Y(p[2]))));
    for (let i = pts.length - 1; i >= 0; i--) ctx.lineTo(X(pts[i][0]), Y(pts[i][1]));
    ctx.closePath(); ctx.fill();
    ctx.strokeStyle = '#1976d2'; ctx.lineWidth = 1.5;
    ctx.beginPath();
    pts.forEach((p, i) => (i ? ctx.lineTo(X(p[0]), Y(p[3])) : ctx.moveTo(X(p[0]), Y(p[3]))));
    ctx.stroke();
  }
}
