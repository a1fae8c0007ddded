import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { CircuitBreaker } from '../../src/cache/breaker.js';
import { StaticMembership, type MembershipChange, type WorkerInfo } from '../../src/cache/membership.js';
import { MembershipHub, PortMembership } from '../../src/cache/membership-port.js';
import { SharedBreakers } from '../../src/cache/shared-breakers.js';

describe('shared breakers', () => {
  it('follow the circuit breaker: open on a failure, one probe after the cooldown, closed on its success', () => {
    let now = 0;
    const t = new SharedBreakers({ cooldownMs: 1000, maxCooldownMs: 4000, now: () => now });
    const b = t.get('w1');
    expect(b.allow()).toBe(true);
    b.failure();
    expect(b.state).toBe('open');
    expect(b.allow()).toBe(false);
    now = 999;
    expect(b.allow()).toBe(false);
    now = 1000;
    expect(b.state).toBe('half-open');
    expect(b.allow()).toBe(true);
    expect(b.allow()).toBe(false);
    b.success();
    expect(b.state).toBe('closed');
    expect(b.allow()).toBe(true);
    expect(t.get('w2').state).toBe('closed');
  });

  it('double the cooldown after a failed probe, up to the maximum, as the circuit breaker does', () => {
    let now = 0;
    const shared = new SharedBreakers({ cooldownMs: 1000, maxCooldownMs: 3000, now: () => now }).get('w');
    const local = new CircuitBreaker({ cooldownMs: 1000, maxCooldownMs: 3000, now: () => now });
    for (const b of [shared, local]) {
      now = 0;
      b.failure();
      const openFor: number[] = [];
      for (let i = 0; i < 4; i++) {
        const from = now;
        while (b.state === 'open') now += 100;
        openFor.push(now - from);
        expect(b.allow()).toBe(true);
        b.failure();
      }
      expect(openFor).toEqual([1000, 2000, 3000, 3000]);
    }
  });

  it('are one breaker per worker across every view of the memory: one trip, one probe', () => {
    let now = 0;
    const trips: string[] = [];
    const owner = new SharedBreakers({ cooldownMs: 1000, now: () => now }, undefined, (id) => trips.push(`owner:${id}`));
    const views = [1, 2, 3].map((n) => new SharedBreakers({ cooldownMs: 1000, now: () => now }, owner.buffer, (id) => trips.push(`view${n}:${id}`)));
    // Every view fails against the same worker (requests that were in flight when it died).
    for (const v of views) v.get('dead').failure();
    owner.get('dead').failure();
    expect(trips).toEqual(['view1:dead']);
    expect(owner.trips).toBe(1);
    expect(views.map((v) => v.get('dead').allow())).toEqual([false, false, false]);
    now = 1000;
    // After the cooldown, one probe for the whole process.
    const allowed = [...views, owner].map((v) => v.get('dead').allow());
    expect(allowed.filter(Boolean)).toHaveLength(1);
    views[2]!.get('dead').success();
    expect(owner.get('dead').state).toBe('closed');
    expect(views[0]!.get('alive').allow()).toBe(true);
    expect(owner.trips).toBe(1);
  });

  it('give workers beyond the capacity breakers of their own rather than fail', () => {
    const t = new SharedBreakers({ capacity: 2 });
    for (const id of ['a', 'b', 'c', 'd']) t.get(id).failure();
    expect(['a', 'b', 'c', 'd'].map((id) => t.get(id).state)).toEqual(['open', 'open', 'open', 'open']);
  });
});

describe('membership hub', () => {
  it('gives a copy the owner’s list, then every change, and the breakers’ memory', async () => {
    const owner = new StaticMembership(['http://127.0.0.1:7001']);
    const breakers = new SharedBreakers();
    const hub = new MembershipHub(owner, breakers.buffer);
    let shared: SharedArrayBuffer | undefined;
    const copy = new PortMembership(hub.ref, 'static', (b) => (shared = b));
    try {
      await copy.ready();
      if (copy.members().length === 0) {
        await new Promise<void>((resolve) => {
          const off = copy.subscribe(() => {
            off();
            resolve();
          });
        });
      }
      expect(copy.members().map((w) => w.url)).toEqual(['http://127.0.0.1:7001']);
      const changed = new Promise<[readonly WorkerInfo[], MembershipChange]>((resolve) => {
        const off = copy.subscribe((m, c) => {
          off();
          resolve([m, c]);
        });
      });
      owner.update(['http://127.0.0.1:7001', 'http://127.0.0.1:7002']);
      const [members, change] = await changed;
      expect(members.map((w) => w.url)).toEqual(['http://127.0.0.1:7001', 'http://127.0.0.1:7002']);
      expect(change.added.map((w) => w.url)).toEqual(['http://127.0.0.1:7002']);
      // The same memory: a trip here shows there.
      breakers.get('w').failure();
      expect(new SharedBreakers({}, shared).trips).toBe(1);
    } finally {
      hub.close();
      await owner.close();
    }
    // The owner is gone: the copy keeps the last list it was sent.
    expect(copy.members()).toHaveLength(2);
    await copy.close();
    expect(() => copy.members()).toThrow(expect.objectContaining({ code: 'GRANARY_ERR_CLOSED' }));
  });

  it('lets a copy in a worker thread report its trip to the owner, and the process exits by itself after close()', async () => {
    const fixture = new URL('../fixtures/shared-client-child.ts', import.meta.url).pathname;
    const child = spawn(process.execPath, ['--import', 'tsx', fixture], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    expect(code).toBe(0);
    const { seen, trips } = JSON.parse(out) as {
      seen: { threadId: number; workers: string[]; bytes: number; fallbacks: number };
      trips: { worker: string; threadId: number }[];
    };
    expect(seen.workers).toHaveLength(1);
    expect(seen.bytes).toBe(4096);
    // Its stat and its read went to the store; the first failure tripped the breaker.
    expect(seen.fallbacks).toBe(2);
    // Reported in the owner's thread, naming the thread where it happened.
    expect(trips).toHaveLength(1);
    expect(trips[0]?.threadId).toBe(seen.threadId);
    expect(trips[0]?.worker).toBe(seen.workers[0]);
  }, 60_000);
});
