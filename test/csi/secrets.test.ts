/**
 * Secrets: a worker token given in the CSI `secrets` field reaches the mount (the
 * worker, which requires it, serves the mount's reads), and it appears in no log, in no
 * process's argument list, in no file of the state directory and in no error.
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startWorker, type CacheWorker } from '../../src/cache/worker.js';
import { SECRET_KEYS } from '../../src/csi/constants.js';
import { cleanupCsi, csiClient, csiRunnable, READ_ONLY_MANY, records, servingOf, startPlugin, type CsiClient, type Plugin } from './fixture.js';

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .map((f) => join(dir, f))
    .filter((f) => {
      try {
        return statSync(f).isFile();
      } catch {
        return false;
      }
    });
}

/** Every process's argument list, NUL-separated as /proc has it. */
function allCmdlines(): string[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .flatMap((pid) => {
      try {
        return [readFileSync(`/proc/${pid}/cmdline`, 'utf8')];
      } catch {
        return [];
      }
    });
}

/** The sum of a worker metric's series, those whose labels `keep` accepts. */
async function metric(worker: CacheWorker, token: string, name: string, keep: (labels: string) => boolean = () => true): Promise<number> {
  const res = await fetch(`${worker.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
  const text = await res.text();
  return [...text.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`, 'gm'))].filter((m) => keep(m[1] ?? '')).reduce((sum, m) => sum + Number(m[2]), 0);
}

describe.runIf(csiRunnable)('secrets of a published volume', () => {
  const token = `tok-${randomBytes(16).toString('hex')}`;
  let work: string;
  let data: string;
  let worker: CacheWorker;
  let plugin: Plugin;
  let csi: CsiClient;
  let target: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'granary-csi-secret-'));
    data = join(work, 'data');
    await mkdir(data);
    await writeFile(join(data, 'weights.bin'), Buffer.alloc(2 * 1024 * 1024, 0x33));
    worker = await startWorker({ host: '127.0.0.1', port: 0, memoryBytes: 64 * 1024 * 1024, fileRoot: data, token });
    plugin = await startPlugin(work);
    csi = csiClient(plugin.socket);
    target = join(work, 'pods', 'p1', 'mount');
    await mkdir(join(work, 'pods', 'p1'), { recursive: true });
  }, 90_000);

  afterAll(async () => {
    csi?.close();
    await plugin?.kill('SIGTERM');
    await cleanupCsi([join(work, 'state')]);
    await worker?.close();
    await rm(work, { recursive: true, force: true });
  }, 60_000);

  it("reach the mount: the worker that requires the token lets the mount's requests in", async () => {
    await csi.node('NodePublishVolume', {
      volume_id: 'v-secret',
      target_path: target,
      volume_capability: READ_ONLY_MANY,
      readonly: true,
      volume_context: { source: `file://${data}/`, workers: worker.url },
      secrets: { [SECRET_KEYS.token]: token },
    });
    expect(readFileSync(join(target, 'weights.bin')).equals(Buffer.alloc(2 * 1024 * 1024, 0x33))).toBe(true);
    // The mount's requests to the worker were let in (a wrong or missing token is refused, and counted).
    expect(await metric(worker, token, 'granary_worker_requests_total', (l) => l.includes('status="200"') && !l.includes('endpoint="/metrics"'))).toBeGreaterThan(0);
    expect(await metric(worker, token, 'granary_worker_refused_total')).toBe(0);
    // It travels in the environment of the mount's processes, readable by root alone.
    const holder = records(join(work, 'state'))[0]?.stagings.at(-1)?.holderPid ?? -1;
    expect(readFileSync(`/proc/${holder}/environ`, 'utf8').split('\0')).toContain(`GRANARY_TOKEN=${token}`);
    expect(readFileSync(`/proc/${servingOf(holder) ?? -1}/environ`, 'utf8').split('\0')).toContain(`GRANARY_TOKEN=${token}`);
  }, 120_000);

  it('appear in no process argument list, no log and no file of the state directory', () => {
    for (const cmdline of allCmdlines()) expect(cmdline).not.toContain(token);
    expect(plugin.output()).not.toContain(token);
    const files = filesUnder(join(work, 'state'));
    expect(files.some((f) => f.endsWith('mount.log'))).toBe(true);
    for (const f of files) expect(readFileSync(f, 'utf8')).not.toContain(token);
  });

  it('appear in no error, even when the failing argument holds one', async () => {
    const err = (await csi
      .node('NodePublishVolume', {
        volume_id: 'v-bad',
        target_path: join(work, 'pods', 'p2', 'mount'),
        volume_capability: READ_ONLY_MANY,
        readonly: true,
        volume_context: { source: `file://${data}/`, workers: `http://127.0.0.1:1/?key=${token}` },
        secrets: { [SECRET_KEYS.token]: token },
      })
      .then(() => undefined, (e: unknown) => e)) as ServiceError | undefined;
    expect(err).toBeDefined();
    expect(err?.details).toContain('***');
    expect(err?.details).not.toContain(token);
    const unknownKey = (await csi
      .node('NodePublishVolume', {
        volume_id: 'v-bad2',
        target_path: join(work, 'pods', 'p3', 'mount'),
        volume_capability: READ_ONLY_MANY,
        volume_context: { source: `file://${data}/` },
        secrets: { tokn: token },
      })
      .then(() => undefined, (e: unknown) => e)) as ServiceError | undefined;
    expect(unknownKey?.code).toBe(status.INVALID_ARGUMENT);
    expect(unknownKey?.details).toContain('tokn');
    expect(unknownKey?.details).not.toContain(token);
    expect(plugin.output()).not.toContain(token);
    for (const f of filesUnder(join(work, 'state'))) expect(readFileSync(f, 'utf8')).not.toContain(token);
  }, 120_000);
});
