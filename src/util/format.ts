/**
 * Numbers and tables for people, shared by the CLI and the demo. Decimal units
 * throughout, so a size and the MB/s next to it agree.
 */

/** Bytes for people: `48.7 MB`, `512 B`. */
export function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = -1;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v.toFixed(1)} ${units[u] ?? ''}`;
}

/** A rate in MB/s, without the unit: `12.3`; `-` when no time passed. */
export function formatMBps(bytes: number, seconds: number, digits = 1): string {
  return seconds > 0 ? (bytes / 1e6 / seconds).toFixed(digits) : '-';
}

export interface TableOptions {
  /** How many leading columns are left-aligned (text); the rest are right-aligned (numbers). @default 1 */
  leftColumns?: number;
  /** A line of dashes under the header. @default false */
  rule?: boolean;
}

/** A plain-text table: each column as wide as its widest cell, two spaces between columns. */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[], options: TableOptions = {}): string {
  const left = options.leftColumns ?? 1;
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i < left ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  const lines = [line(header)];
  if (options.rule) lines.push(line(widths.map((w) => '-'.repeat(w))));
  return [...lines, ...rows.map(line)].join('\n');
}
