import { describe, expect, it } from 'vitest';
import { ClosedError, InvalidArgumentError } from '../../src/errors.js';
import { startThreadedWorker } from '../../src/demo/threaded-worker.js';
import { SimulatedDevice } from '../../src/demo/train-step.js';

describe('SimulatedDevice', () => {
  it('counts stepMs of device time per launched step, and synchronize waits for the last one to end', async () => {
    const device = new SimulatedDevice(5);
    const t = performance.now();
    for (let i = 0; i < 4; i++) await device.step();
    await device.synchronize();
    expect(device.stats()).toEqual({ busyMs: 20, steps: 4 });
    // Four 5 ms steps back to back cannot end before 20 ms have passed.
    expect(performance.now() - t).toBeGreaterThanOrEqual(19);
  });

  it('lets the host run one step ahead: a launch on an idle device returns at once', async () => {
    const device = new SimulatedDevice(10_000);
    const ac = new AbortController();
    await device.step(ac.signal);
    // The second launch waits for the first step; aborting ends the wait with the signal's reason.
    const second = device.step(ac.signal);
    ac.abort(new Error('stop'));
    await expect(second).rejects.toThrow('stop');
  });

  it('refuses a negative step time naming the option', () => {
    expect(() => new SimulatedDevice(-1)).toThrow(InvalidArgumentError);
    expect(() => new SimulatedDevice(-1)).toThrow(/`stepMs`.*`-1`/);
  });
});

describe('threaded cache worker', () => {
  it('serves from its own thread, reports its counters, and closes idempotently', async () => {
    const w = await startThreadedWorker({ memoryBytes: 16 * 1024 * 1024 });
    expect(w.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const health = await fetch(`${w.url}/healthz`);
    expect(health.ok).toBe(true);
    const info = await w.info();
    expect(info.id).toBe(w.id);
    expect(info.counters.hits).toBe(0);
    await Promise.all([w.close(), w.close()]);
    await w.close();
    await expect(w.info()).rejects.toBeInstanceOf(ClosedError);
  });

  it('rejects with the worker\'s own coded error when it cannot start', async () => {
    await expect(startThreadedWorker({ memoryBytes: -5 })).rejects.toMatchObject({ code: 'GRANARY_ERR_INVALID_ARGUMENT' });
  });
});
