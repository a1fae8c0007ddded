/**
 * `npm run bench -- peers --quick` end to end: it completes, every contender present
 * has a cold and a warm pass of every workload, and every byte read was verified.
 * No timing is asserted. A peer missing on the machine (s3fs, rclone) is a printed
 * skip, or a failure under GRANARY_REQUIRE_SERVICES=1.
 */
import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const RESULT = join(ROOT, 'bench', 'results', 'peers-quick.json');
const REQUIRE = process.env.GRANARY_REQUIRE_SERVICES === '1';

interface QuickResult {
  completed: boolean;
  ok: boolean;
  startedAt: string;
  profiles: { name: string }[];
  workloads: { id: string; objects: number; objectBytes: number }[];
  contenders: { profile: string; workload: string; contender: string; status: string; note?: string }[];
  rows: { profile: string; workload: string; contender: string; pass: string; files?: number; bytes?: number; verified: boolean; note?: string }[];
  loader: { present: boolean; note?: string; rows: { verified: boolean }[] };
}

function runQuick(): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn('npm', ['run', 'bench', '--', 'peers', '--quick'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('exit', (code) => resolve({ code, output }));
  });
}

describe('npm run bench -- peers --quick', () => {
  it('completes with every contender present measured cold and warm and every byte verified', { timeout: 900_000 }, async () => {
    rmSync(RESULT, { force: true });
    const before = Date.now();
    const { code, output } = await runQuick();
    const result = JSON.parse(readFileSync(RESULT, 'utf8')) as QuickResult;
    expect(Date.parse(result.startedAt)).toBeGreaterThanOrEqual(before - 1000);
    expect(result.completed).toBe(true);
    const failed = result.contenders.filter((c) => c.status === 'failed');
    expect(failed, output.slice(-4000)).toEqual([]);
    expect(code, output.slice(-4000)).toBe(0);
    for (const peer of ['s3fs', 'rclone']) {
      const skipped = result.contenders.filter((c) => c.contender === peer && c.status === 'skipped');
      if (skipped.length === 0) continue;
      if (REQUIRE) expect.fail(`${peer} is missing under GRANARY_REQUIRE_SERVICES=1: ${skipped[0]?.note ?? ''}`);
      console.log(`skipped peer ${peer}: ${skipped[0]?.note ?? ''}`);
    }
    // The project's own contenders always run.
    for (const own of ['ceiling', 'direct', 'granary']) expect(result.contenders.filter((c) => c.contender === own).every((c) => c.status === 'ok')).toBe(true);
    const present = result.contenders.filter((c) => c.status === 'ok');
    expect(present.length).toBeGreaterThanOrEqual(result.profiles.length * result.workloads.length * 3);
    for (const c of present) {
      const w = result.workloads.find((x) => x.id === c.workload)!;
      for (const pass of ['cold', 'warm']) {
        const row = result.rows.find((r) => r.profile === c.profile && r.workload === c.workload && r.contender === c.contender && r.pass === pass);
        expect(row, `${c.contender} ${c.workload} ${pass}`).toBeDefined();
        expect(row!.verified, `${c.contender} ${c.workload} ${pass}: ${row!.note ?? ''}`).toBe(true);
        expect(row!.files).toBe(w.objects);
        expect(row!.bytes).toBe(w.objects * w.objectBytes);
      }
    }
    expect(result.rows.every((r) => r.verified)).toBe(true);
    expect(result.loader.rows.every((r) => r.verified)).toBe(true);
    if (!result.loader.present) console.log(`loader rows absent: ${result.loader.note ?? ''}`);
  });
});
