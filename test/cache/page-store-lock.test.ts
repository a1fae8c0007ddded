import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { PageStore } from '../../src/cache/page-store.js';
import { ErrorCodes } from '../../src/errors.js';

const fixture = new URL('../fixtures/page-store-child.ts', import.meta.url).pathname;
const HEARTBEAT_MS = 100;
const children: ChildProcess[] = [];
const dirs: string[] = [];

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'granary-lock-'));
  dirs.push(d);
  return d;
}

/** A page store on `dir` in its own process: its first line, parsed, and the child. */
async function storeProcess(dir: string): Promise<{ child: ChildProcess; line: { ready?: true; error?: { code: string; message: string } } }> {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture, dir, String(HEARTBEAT_MS)], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  const text = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', resolve);
    child.once('close', (code) => reject(new Error(`page store child exited with ${String(code)} before its first line`)));
  });
  return { child, line: JSON.parse(text) as { ready?: true; error?: { code: string; message: string } } };
}

function killed(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

afterAll(async () => {
  await Promise.all(children.map(killed));
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('page store directory lock', () => {
  it('refuses a second process while the first lives, and lets a new store take over once the killed holder is stale', async () => {
    const dir = await tempDir();
    const first = await storeProcess(dir);
    expect(first.line).toEqual({ ready: true });
    const holder = JSON.parse(await readFile(join(dir, 'LOCK'), 'utf8')) as { id: string; pid: number };
    expect(holder.pid).toBe(first.child.pid);

    const second = await storeProcess(dir);
    expect(second.line.error).toMatchObject({ code: ErrorCodes.CONFIG, message: expect.stringContaining(holder.id) as unknown });

    // The holder's heartbeats keep it fresh: the lock's mtime moves while it lives.
    const { mtimeMs } = await stat(join(dir, 'LOCK'));
    await vi.waitFor(async () => expect((await stat(join(dir, 'LOCK'))).mtimeMs).toBeGreaterThan(mtimeMs), {
      timeout: 10_000,
      interval: HEARTBEAT_MS / 2,
    });

    await killed(first.child);
    // Polling: each open fails with GRANARY_ERR_CONFIG until the lock missed enough heartbeats.
    const store = await vi.waitFor(() => PageStore.open({ pageSize: 4096, memoryBytes: 0, diskDir: dir, diskBytes: 1 << 20, lockHeartbeatMs: HEARTBEAT_MS }), {
      timeout: 20_000,
      interval: HEARTBEAT_MS,
    });
    try {
      const now = JSON.parse(await readFile(join(dir, 'LOCK'), 'utf8')) as { id: string; pid: number };
      expect(now.pid).toBe(process.pid);
      expect(now.id).not.toBe(holder.id);
    } finally {
      await store.close();
    }
    await expect(readFile(join(dir, 'LOCK'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('refuses a fresh lock that holds our own pid but another instance id (two containers, both pid 1)', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'LOCK'), JSON.stringify({ id: 'other-container', pid: process.pid, host: 'pod-a', heartbeatMs: 60_000 }));
    await expect(PageStore.open({ pageSize: 4096, memoryBytes: 0, diskDir: dir, diskBytes: 1 << 20 })).rejects.toMatchObject({
      code: ErrorCodes.CONFIG,
      message: expect.stringContaining('other-container') as unknown,
    });
    // Its holder stopped refreshing it four heartbeats ago: taken over.
    const old = new Date(Date.now() - 5 * 60_000);
    await utimes(join(dir, 'LOCK'), old, old);
    await using store = await PageStore.open({ pageSize: 4096, memoryBytes: 0, diskDir: dir, diskBytes: 1 << 20 });
    expect(store.stats().diskPages).toBe(0);
  });
});
