/**
 * The peers bench's report: per-profile tables (rates, ratios vs direct and vs the
 * best peer, store requests, CPU and memory), the issue's targets each marked met or
 * not met with the numbers behind them, and the loader rows.
 */
import { fmt, markdownTable } from '../lib/report.js';
import type { PassRow } from './metrics.js';

/** Contenders that are peers (other tools), for "vs the best peer". */
export const PEERS = ['s3fs', 'rclone'];

export interface ContenderStatus {
  profile: string;
  workload: string;
  contender: string;
  label: string;
  status: 'ok' | 'absent' | 'skipped' | 'failed';
  note?: string;
}

export interface TargetResult {
  profile: string;
  target: string;
  measured: string;
  met: boolean | null;
}

const find = (rows: readonly PassRow[], profile: string, workload: string, contender: string, pass: string): PassRow | undefined =>
  rows.find((r) => r.profile === profile && r.workload === workload && r.contender === contender && r.pass === pass);

function bestPeer(rows: readonly PassRow[], profile: string, workload: string, pass: string): PassRow | undefined {
  return PEERS.map((p) => find(rows, profile, workload, p, pass))
    .filter((r): r is PassRow => r !== undefined)
    .sort((a, b) => b.rate - a.rate)[0];
}

/** `x` over `y`, formatted; n/a when either is missing. */
function ratio(x: PassRow | undefined, y: PassRow | undefined): number {
  return x && y && y.rate > 0 ? x.rate / y.rate : Number.NaN;
}

const reqs = (r: PassRow | undefined): string => {
  const q = r?.storeRequests;
  if (!q) return 'n/a';
  const n = (k: string): number => q[k] ?? 0;
  return `${n('get')} GET, ${n('rangedGet')} ranged, ${n('head')} HEAD, ${n('list')} LIST${n('put') + n('other') > 0 ? `, ${n('put') + n('other')} other` : ''}`;
};

export function evaluateTargets(rows: readonly PassRow[], profiles: readonly string[]): TargetResult[] {
  const out: TargetResult[] = [];
  const check = (profile: string, workload: string, pass: string, target: string, need: { direct?: number; peer?: number }, extra?: (g: PassRow) => [string, boolean]): void => {
    const g = find(rows, profile, workload, 'granary', pass);
    // A workload or profile this run left out has no target line.
    if (!rows.some((r) => r.profile === profile && r.workload === workload)) return;
    if (need.direct !== undefined) {
      const r = ratio(g, find(rows, profile, workload, 'direct', pass));
      out.push({ profile, target: `${target}: >= ${need.direct}x direct`, measured: Number.isFinite(r) ? `${fmt(r, 2)}x` : 'n/a (a row is missing)', met: Number.isFinite(r) ? r >= need.direct : null });
    }
    if (need.peer !== undefined) {
      const p = bestPeer(rows, profile, workload, pass);
      const r = ratio(g, p);
      out.push({ profile, target: `${target}: >= ${need.peer}x the best peer`, measured: p ? `${fmt(r, 2)}x (${p.contender})` : 'no peer measured', met: Number.isFinite(r) ? r >= need.peer : null });
    }
    if (extra && g) {
      const [measured, met] = extra(g);
      out.push({ profile, target: `${target}: 0 GET/HEAD`, measured, met });
    }
  };
  const noGetHead = (g: PassRow): [string, boolean] => {
    const q = g.storeRequests ?? {};
    const n = (q.get ?? 0) + (q.rangedGet ?? 0) + (q.head ?? 0);
    return [reqs(g), n === 0];
  };
  if (profiles.includes('sameRegion')) {
    check('sameRegion', 'w2', 'warm', 'W2 warm', { direct: 5, peer: 1.5 }, noGetHead);
    check('sameRegion', 'w1', 'warm', 'W1 warm', { direct: 3, peer: 1.2 });
    check('sameRegion', 'w2', 'cold', 'W2 cold', { direct: 0.8, peer: 2 });
    check('sameRegion', 'w1', 'cold', 'W1 cold', { direct: 0.8 });
  }
  if (profiles.includes('crossRegion')) {
    check('crossRegion', 'w1', 'cold', 'W1 cold', { direct: 0.95 });
    check('crossRegion', 'w2', 'cold', 'W2 cold', { direct: 0.95 });
    check('crossRegion', 'w2', 'warm', 'W2 warm', { direct: 10 });
  }
  return out;
}

export function targetLines(ts: readonly TargetResult[]): string[] {
  return ts.map((t) => `- [${t.profile}] ${t.target}: ${t.measured}: **${t.met === null ? 'not measured' : t.met ? 'met' : 'not met'}**`);
}

function cpuText(r: PassRow): string {
  const c = r.cpuS ?? {};
  return ['reader', 'workers', 'daemon']
    .filter((k) => c[k] !== undefined)
    .map((k) => `${k[0]} ${fmt(c[k] ?? Number.NaN, 1)}`)
    .join(' / ');
}

function rssText(r: PassRow): string {
  const m = r.peakRssMiB ?? {};
  return ['reader', 'workers', 'daemon']
    .filter((k) => m[k] !== undefined)
    .map((k) => `${k[0]} ${fmt(m[k] ?? Number.NaN, 0)}`)
    .join(' / ');
}

/** The headline table of one profile: rate cold / warm per contender and workload, ratios vs direct and the best peer. */
export function headlineTable(rows: readonly PassRow[], profile: string, workloads: readonly { id: string; title: string; unit: string }[], contenders: readonly { id: string; label: string }[]): string {
  const header = [`profile ${profile}`, ...contenders.map((c) => c.label)];
  const body: string[][] = [];
  for (const w of workloads) {
    const cell = (c: string, pass: string): string => {
      const r = find(rows, profile, w.id, c, pass);
      return r ? fmt(r.rate, 0) : '-';
    };
    const bold = (c: string, s: string): string => (c === 'granary' ? `**${s}**` : s);
    body.push([`${w.title}, ${w.unit}, cold / warm`, ...contenders.map((c) => bold(c.id, `${cell(c.id, 'cold')} / ${cell(c.id, 'warm')}`))]);
    body.push([
      `${w.id.toUpperCase()} vs direct, cold / warm`,
      ...contenders.map((c) => `${fmt(ratio(find(rows, profile, w.id, c.id, 'cold'), find(rows, profile, w.id, 'direct', 'cold')), 2)} / ${fmt(ratio(find(rows, profile, w.id, c.id, 'warm'), find(rows, profile, w.id, 'direct', 'warm')), 2)}`),
    ]);
    body.push([
      `${w.id.toUpperCase()} vs best peer, cold / warm`,
      ...contenders.map((c) => `${fmt(ratio(find(rows, profile, w.id, c.id, 'cold'), bestPeer(rows, profile, w.id, 'cold')), 2)} / ${fmt(ratio(find(rows, profile, w.id, c.id, 'warm'), bestPeer(rows, profile, w.id, 'warm')), 2)}`),
    ]);
  }
  return markdownTable(header, body);
}

/** Every pass row of one profile, with requests, connections, bytes, CPU and memory. */
export function detailTable(rows: readonly PassRow[], profile: string): string {
  const rs = rows.filter((r) => r.profile === profile);
  return markdownTable(
    ['workload', 'contender', 'pass', 'wall s', 'rate', 'store requests', 'new conns', 'store MiB', 'CPU s (reader / workers / daemon)', 'peak RSS MiB', 'verified'],
    rs.map((r) => [
      r.workload,
      r.contender,
      r.pass,
      fmt(r.wallS, 2),
      `${fmt(r.rate, r.unit === 'files/s' ? 0 : 1)} ${r.unit}`,
      reqs(r),
      r.newConnections ?? 'n/a',
      r.storeBytesDown === undefined ? 'n/a' : fmt(r.storeBytesDown / 2 ** 20, 0),
      cpuText(r),
      rssText(r),
      r.verified ? 'yes' : `NO${r.note ? ` (${r.note})` : ''}`,
    ]),
    ['l', 'l', 'l', 'r', 'r', 'l', 'r', 'r', 'l', 'l', 'l'],
  );
}

export function statusLines(statuses: readonly ContenderStatus[]): string[] {
  return statuses.filter((s) => s.status !== 'ok').map((s) => `- ${s.label} [${s.profile} ${s.workload}]: ${s.status}${s.note ? `: ${s.note}` : ''}`);
}
