/**
 * A hand-written SVG bar chart for one workload of the peers bench: per contender a
 * cold and a warm bar, labelled with the rate. No dependency.
 */
import type { PassRow } from './metrics.js';

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

export interface ChartInput {
  title: string;
  unit: string;
  profile: string;
  contenders: readonly { id: string; label: string }[];
  rows: readonly PassRow[];
  /** A line under the title: when and under what load it was measured. */
  note?: string;
}

export function barChart(c: ChartInput): string {
  const present = c.contenders.filter((k) => c.rows.some((r) => r.contender === k.id));
  const rate = (id: string, pass: string): number | undefined => c.rows.find((r) => r.contender === id && r.pass === pass)?.rate;
  const max = Math.max(1, ...c.rows.map((r) => r.rate));
  const [left, top, barH, gap, groupGap, width] = [210, c.note ? 74 : 56, 16, 3, 16, 520];
  const groupH = 2 * barH + gap + groupGap;
  const height = top + present.length * groupH + 40;
  const total = left + width + 90;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${total}" height="${height}" viewBox="0 0 ${total} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="12" y="22" font-size="15" font-weight="bold">${esc(`${c.title}: ${c.unit}, higher is better`)}</text>`,
    `<text x="12" y="40" fill="#555">${esc(`profile ${c.profile}; 8 concurrent readers, listing first, whole-object reads, seeded shuffle`)}</text>`,
  ];
  if (c.note) parts.push(`<text x="12" y="58" fill="#555">${esc(c.note)}</text>`);
  present.forEach((k, i) => {
    const y0 = top + i * groupH;
    parts.push(`<text x="${left - 8}" y="${y0 + barH + 2}" text-anchor="end" dominant-baseline="middle"${k.id === 'granary' ? ' font-weight="bold"' : ''}>${esc(k.label)}</text>`);
    (['cold', 'warm'] as const).forEach((pass, j) => {
      const v = rate(k.id, pass);
      const y = y0 + j * (barH + gap);
      const w = v === undefined ? 0 : Math.max(1, (v / max) * width);
      parts.push(`<rect x="${left}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${pass === 'cold' ? '#7aa6d8' : '#1f5fa8'}"/>`);
      parts.push(`<text x="${(left + w + 6).toFixed(1)}" y="${y + barH / 2}" dominant-baseline="middle" fill="#222">${esc(v === undefined ? `${pass}: n/a` : `${pass} ${v >= 100 ? v.toFixed(0) : v.toFixed(1)}`)}</text>`);
    });
  });
  const ly = height - 18;
  parts.push(`<rect x="${left}" y="${ly - 10}" width="12" height="12" fill="#7aa6d8"/><text x="${left + 18}" y="${ly}">cold (empty caches)</text>`);
  parts.push(`<rect x="${left + 160}" y="${ly - 10}" width="12" height="12" fill="#1f5fa8"/><text x="${left + 178}" y="${ly}">warm (second pass)</text>`);
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
