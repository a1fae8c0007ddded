import type { DemoResult, EpochKind } from './engine.js';
import { profileText } from './report.js';

const COLORS: Record<EpochKind, string> = { direct: '#9aa5b1', cold: '#4c8bf5', warm: '#1e9e5a' };

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
  /** Second line under the bar. */
  sublabel: string;
  value: number;
  color: string;
  text: string;
}

function panel(x: number, y: number, w: number, h: number, title: string, hint: string, bars: Bar[], max: number, axis: (v: number) => string): string {
  const out: string[] = [];
  const left = 56;
  const bottom = 40;
  const plotW = w - left - 10;
  const plotH = h - bottom - 44;
  const px = x + left;
  const py = y + 44;
  out.push(`<text x="${x + w / 2}" y="${y + 14}" text-anchor="middle" font-size="14" font-weight="600">${esc(title)}</text>`);
  out.push(`<text x="${x + w / 2}" y="${y + 30}" text-anchor="middle" font-size="11" fill="#5f6b7a">${esc(hint)}</text>`);
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
    out.push(`<text x="${(bx + bw / 2).toFixed(1)}" y="${py + plotH + 15}" text-anchor="middle" font-size="11" fill="#33404d">${esc(b.label)}</text>`);
    out.push(`<text x="${(bx + bw / 2).toFixed(1)}" y="${py + plotH + 28}" text-anchor="middle" font-size="11" fill="#5f6b7a">${esc(b.sublabel)}</text>`);
  });
  out.push(`<line x1="${px}" y1="${py + plotH}" x2="${px + plotW}" y2="${py + plotH}" stroke="#8a96a3"/>`);
  return out.join('\n');
}

function barLabel(e: DemoResult['epochs'][number]): { label: string; sublabel: string } {
  return e.kind === 'direct' ? { label: 'direct', sublabel: 'store' } : { label: e.label, sublabel: e.kind };
}

/**
 * The demo's chart as a standalone SVG document (no scripts, no external fonts):
 * per epoch (direct, cold, warm), the rows/s, the share of the epoch the training
 * loop waited for data, and the simulated accelerator's utilization.
 */
export function renderChart(r: DemoResult): string {
  const width = 1000;
  const height = 410;
  const bars = (value: (e: DemoResult['epochs'][number]) => number, text: (v: number) => string): Bar[] =>
    r.epochs.map((e) => ({ ...barLabel(e), value: value(e), color: COLORS[e.kind], text: text(value(e)) }));
  const percent = (v: number) => `${v.toFixed(0)}%`;
  const tput = bars((e) => e.rowsPerSec, fmt);
  const maxT = niceMax(Math.max(...tput.map((b) => b.value), 1));
  const mb = (r.dataset.bytes / 1e6).toFixed(0);
  const subtitle = [
    `store: s3rver behind the ${r.store.profile} network profile (${profileText(r.store.settings)})`,
    `${mb} MB of Parquet (${r.dataset.files} files, ${r.dataset.rows} rows); ${r.workers.length} cache workers; batch ${r.options.batchSize} rows, simulated step ${r.options.stepMs} ms`,
  ];
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, 'Segoe UI', sans-serif">`,
    `<title>granary demo: throughput, data stall and utilization per epoch</title>`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${width / 2}" y="24" text-anchor="middle" font-size="17" font-weight="700">granary demo: a training job reading the store directly vs through the cache</text>`,
    ...subtitle.map((line, i) => `<text x="${width / 2}" y="${44 + 15 * i}" text-anchor="middle" font-size="12" fill="#5f6b7a">${esc(line)}</text>`),
    panel(10, 76, 420, 290, 'Throughput', 'rows/s, higher is better', tput, maxT, fmt),
    panel(440, 76, 275, 290, 'Data stall', '% of the epoch waiting for data, lower is better', bars((e) => e.stallPct, percent), 100, percent),
    panel(720, 76, 275, 290, 'Accelerator utilization', '% of the epoch busy, higher is better', bars((e) => e.stepPct, percent), 100, percent),
  ];
  const legend: [string, string][] = [
    [COLORS.direct, 'direct from the store'],
    [COLORS.cold, 'through granary, cold cache'],
    [COLORS.warm, 'through granary, warm cache'],
  ];
  legend.forEach(([c, t], i) => {
    const lx = 150 + i * 250;
    parts.push(`<rect x="${lx}" y="${height - 22}" width="12" height="12" fill="${c}" rx="2"/>`);
    parts.push(`<text x="${lx + 18}" y="${height - 12}" font-size="12">${esc(t)}</text>`);
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
