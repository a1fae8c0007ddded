/**
 * One measured pass of the peers bench: drop the page cache, snapshot the proxy's
 * counters and every counted process's CPU, let the reader run, snapshot again as the
 * clock stops, then have the reader hash what it read and check every byte.
 */
import type { FaultProxyStats, StoreRequestCounts } from '../../src/netem/fault-proxy.js';
import type { ChildHandle } from '../lib/child.js';
import { MiB, type Workload } from './data.js';
import type { PassStopped, PassVerified } from './reader.js';
import { cpuSeconds, peakRssMiB, processTree, resetPeakRss, syncAndDropPageCache } from './system.js';

export type PassName = 'cold' | 'warm';

export interface PassRow {
  profile: string;
  workload: string;
  contender: string;
  /** `cold` or `warm`; loader rows name their epochs. */
  pass: string;
  wallS: number;
  rate: number;
  unit: string;
  files?: number;
  bytes?: number;
  /** Store requests by kind, counted at the proxy; absent where nothing goes through it. */
  storeRequests?: Record<string, number>;
  /** New TCP connections to the store (the proxy) during the pass. */
  newConnections?: number;
  /** Bytes the store sent (through the proxy). */
  storeBytesDown?: number;
  /** CPU seconds during the pass, by role: reader, workers, daemon. */
  cpuS?: Record<string, number>;
  /** Peak resident set during the pass (VmHWM, reset before it), by role, in MiB. */
  peakRssMiB?: Record<string, number>;
  verified: boolean;
  pageCacheDropped?: boolean;
  note?: string;
}

export interface PassTarget {
  profile: string;
  workload: Workload;
  contender: string;
  pass: PassName;
  reader: ChildHandle<unknown>;
  /** PIDs counted besides the reader, by role. */
  groups: Record<string, number[]>;
  proxyStats?: () => Promise<FaultProxyStats>;
  expected: ReadonlyMap<string, string>;
}

function sum(pids: readonly number[], f: (pid: number) => number): number {
  return pids.reduce((a, p) => a + f(p), 0);
}

function requestDelta(a: StoreRequestCounts, b: StoreRequestCounts): StoreRequestCounts {
  return { get: b.get - a.get, rangedGet: b.rangedGet - a.rangedGet, head: b.head - a.head, list: b.list - a.list, put: b.put - a.put, other: b.other - a.other };
}

async function nextPhase<T extends { phase: string }>(reader: ChildHandle<unknown>, phase: T['phase']): Promise<T> {
  const r = (await reader.nextResult()) as { phase: string; message?: string };
  if (r.phase === 'error') throw new Error(`reader failed: ${r.message ?? ''}`);
  if (r.phase !== phase) throw new Error(`reader answered ${r.phase}, expected ${phase}`);
  return r as unknown as T;
}

/** Check the reader's digests against the uploaded objects of this workload: every object, every byte. */
export function checkDigests(w: Workload, expected: ReadonlyMap<string, string>, got: Record<string, string>): string | undefined {
  const want = [...expected].filter(([k]) => k.startsWith(`${w.id}/`));
  const gotKeys = Object.keys(got);
  if (gotKeys.length !== want.length) return `read ${gotKeys.length} objects, expected ${want.length}`;
  const bad = want.filter(([k, d]) => got[k] !== d).map(([k]) => k);
  return bad.length === 0 ? undefined : `${bad.length} objects differ (first: ${bad[0] ?? ''})`;
}

export async function measurePass(t: PassTarget): Promise<PassRow> {
  // Each role counts its whole process tree (a daemon's serving processes, a worker's children).
  const roles: Record<string, number[]> = Object.fromEntries(Object.entries({ reader: [t.reader.pid], ...t.groups }).map(([r, pids]) => [r, pids.flatMap(processTree)]));
  const dropped = await syncAndDropPageCache();
  for (const pids of Object.values(roles)) for (const p of pids) resetPeakRss(p);
  const before = await t.proxyStats?.();
  const cpu0 = Object.fromEntries(Object.entries(roles).map(([r, pids]) => [r, sum(pids, (p) => cpuSeconds(p))]));
  t.reader.child.send({ type: 'pass' });
  const stopped = await nextPhase<PassStopped>(t.reader, 'stopped');
  const cpuS = Object.fromEntries(Object.entries(roles).map(([r, pids]) => [r, sum(pids, (p) => cpuSeconds(p)) - (cpu0[r] ?? 0)]));
  const peak = Object.fromEntries(Object.entries(roles).map(([r, pids]) => [r, sum(pids, peakRssMiB)]));
  const after = await t.proxyStats?.();
  t.reader.child.send({ type: 'verify' });
  const verified = await nextPhase<PassVerified>(t.reader, 'verified');
  const problem = checkDigests(t.workload, t.expected, verified.digests);
  const w = t.workload;
  const row: PassRow = {
    profile: t.profile,
    workload: w.id,
    contender: t.contender,
    pass: t.pass,
    wallS: stopped.wallS,
    rate: w.unit === 'MiB/s' ? stopped.bytes / MiB / stopped.wallS : stopped.files / stopped.wallS,
    unit: w.unit,
    files: stopped.files,
    bytes: stopped.bytes,
    cpuS,
    peakRssMiB: peak,
    verified: problem === undefined,
    pageCacheDropped: dropped,
  };
  if (before && after) {
    row.storeRequests = { ...requestDelta(before.requests, after.requests) };
    row.newConnections = after.connections - before.connections;
    row.storeBytesDown = after.bytesDown - before.bytesDown;
  }
  if (problem) row.note = `verification failed: ${problem}`;
  return row;
}
