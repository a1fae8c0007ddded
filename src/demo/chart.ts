import type { DemoResult, EpochKind } from './engine.js';

const COLORS: Record<EpochKind, string> = { direct: '#9aa5b1', cold: '#4c8bf5', warm: '#1e9e5a' };
const STALL = '#e8710a';

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function fmt(n: number): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e4) return `${Math.round(n / 1e3)}k`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return String(Math.round(n));
}

/** A round axis maximum a bit above `v`. */
function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v * 1.05) return m * p;
  return 10 * p;
}

interface Bar {
  label: string;
  value: number;
  color: string;
  text: string;
}

function panel(x: number, y: number, w: number, h: number, title: string, bars: Bar[], max: number, axis: (v: number) => string): string {
  const out: string[] = [];
  const left = 56;
  const bottom = 34;
  const plotW = w - left - 10;
  const plotH = h - bottom - 30;
  const px = x + left;
  const py = y + 30;
  out.push(`<text x="${x + w / 2}" y="${y + 16}" text-anchor="middle" font-size="14" font-weight="600">${esc(title)}</text>`);
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    const gy = py + plotH - (plotH * i) / 4;
    out.push(`<line x1="${px}" y1="${gy}" x2="${px + plotW}" y2="${gy}" stroke="#e3e6ea"/>`);
    out.push(`<text x="${px - 6}" y="${gy + 4}" text-anchor="end" font-size="11" fill="#5f6b7a">${esc(axis(v))}</text>`);
  }
  const slot = plotW / Math.max(1, bars.length);
  const bw = Math.min(64, slot * 0.6);
  bars.forEach((b, i) => {
    const bh = max > 0 ? (plotH * Math.min(b.value, max)) / max : 0;
    const bx = px + slot * i + (slot - bw) / 2;
    const by = py + plotH - bh;
    out.push(`<rect x="${bx.toFixed(1)}" y="${by.toFixed(1)}" width="${bw.toFixed(1)}" height="${bh.toFixed(1)}" fill="${b.color}" rx="2"/>`);
    out.push(`<text x="${(bx + bw / 2).toFixed(1)}" y="${(by - 5).toFixed(1)}" text-anchor="middle" font-size="11">${esc(b.text)}</text>`);
    out.push(`<text x="${(bx + bw / 2).toFixed(1)}" y="${py + plotH + 16}" text-anchor="middle" font-size="11" fill="#33404d">${esc(b.label)}</text>`);
  });
  out.push(`<line x1="${px}" y1="${py + plotH}" x2="${px + plotW}" y2="${py + plotH}" stroke="#8a96a3"/>`);
  return out.join('\n');
}

function barLabel(e: DemoResult['epochs'][number]): string {
  return e.kind === 'direct' ? 'direct' : `${e.label.replace('epoch ', 'ep ')} ${e.kind}`;
}

/**
 * The demo's chart as a standalone SVG document (no scripts, no external fonts):
 * rows/s per epoch (direct, cold, warm) and the share of each epoch the training
 * loop spent waiting for data.
 */
export function renderChart(r: DemoResult): string {
  const width = 860;
  const height = 380;
  const tput: Bar[] = r.epochs.map((e) => ({ label: barLabel(e), value: e.rowsPerSec, color: COLORS[e.kind], text: fmt(e.rowsPerSec) }));
  const stall: Bar[] = r.epochs.map((e) => ({ label: barLabel(e), value: e.stallPct, color: STALL, text: `${e.stallPct.toFixed(0)}%` }));
  const maxT = niceMax(Math.max(...tput.map((b) => b.value), 1));
  const mb = (r.dataset.bytes / 1e6).toFixed(0);
  const subtitle =
    `${mb} MB Parquet (${r.dataset.files} files, ${r.dataset.rows} rows), s3rver behind the ${r.store.profile} profile; ` +
    `${r.workers.length} workers, ${r.membership} membership; batch ${r.options.batchSize}, step ${r.options.stepMs} ms`;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, 'Segoe UI', sans-serif">`,
    `<title>granary demo: throughput per epoch and data stall</title>`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${width / 2}" y="24" text-anchor="middle" font-size="17" font-weight="700">granary demo: reading the store directly vs through the cache</text>`,
    `<text x="${width / 2}" y="44" text-anchor="middle" font-size="11" fill="#5f6b7a">${esc(subtitle)}</text>`,
    panel(10, 56, 500, 290, 'Throughput (rows/s, higher is better)', tput, maxT, fmt),
    panel(520, 56, 330, 290, 'Data stall (% of epoch time, lower is better)', stall, 100, (v) => `${v.toFixed(0)}%`),
  ];
  const legend: [string, string][] = [
    [COLORS.direct, 'direct from the store'],
    [COLORS.cold, 'through granary, cold cache'],
    [COLORS.warm, 'through granary, warm cache'],
  ];
  legend.forEach(([c, t], i) => {
    const lx = 80 + i * 240;
    parts.push(`<rect x="${lx}" y="${height - 22}" width="12" height="12" fill="${c}" rx="2"/>`);
    parts.push(`<text x="${lx + 18}" y="${height - 12}" font-size="12">${esc(t)}</text>`);
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
