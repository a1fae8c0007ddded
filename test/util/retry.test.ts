import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { backoffDelay, retry, sleep } from '../../src/util/retry.js';

/** An AbortSignal that counts its abort listeners, to prove they are removed. */
function countingSignal(): { controller: AbortController; listeners: () => number } {
  const controller = new AbortController();
  const signal = controller.signal;
  let n = 0;
  const add = signal.addEventListener.bind(signal);
  const remove = signal.removeEventListener.bind(signal);
  signal.addEventListener = (...args: Parameters<AbortSignal['addEventListener']>) => {
    if (args[0] === 'abort') n++;
    add(...args);
  };
  signal.removeEventListener = (...args: Parameters<AbortSignal['removeEventListener']>) => {
    if (args[0] === 'abort') n--;
    remove(...args);
  };
  return { controller, listeners: () => n };
}

describe('backoffDelay', () => {
  it('grows exponentially from the base, capped, with full jitter below the cap', () => {
    const top = () => 0.999_999;
    expect(backoffDelay(1, { baseMs: 100, maxMs: 5000, random: top })).toBe(99);
    expect(backoffDelay(2, { baseMs: 100, maxMs: 5000, random: top })).toBe(199);
    expect(backoffDelay(3, { baseMs: 100, maxMs: 5000, random: top })).toBe(399);
    expect(backoffDelay(10, { baseMs: 100, maxMs: 5000, random: top })).toBe(4999);
    expect(backoffDelay(5000, { baseMs: 100, maxMs: 5000, random: top })).toBe(4999);
    expect(backoffDelay(3, { baseMs: 100, maxMs: 5000, random: () => 0 })).toBe(0);
    expect(backoffDelay(3, { baseMs: 100, maxMs: 5000, random: () => 0.5 })).toBe(200);
  });

  it('never waits with a zero base or a zero cap', () => {
    expect(backoffDelay(4, { baseMs: 0, maxMs: 5000, random: () => 0.9 })).toBe(0);
    expect(backoffDelay(4, { baseMs: 100, maxMs: 0, random: () => 0.9 })).toBe(0);
  });
});

describe('sleep', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('resolves after the time and leaves no abort listener behind', async () => {
    const { controller, listeners } = countingSignal();
    let done = false;
    const p = sleep(1000, controller.signal).then(() => (done = true));
    expect(listeners()).toBe(1);
    await vi.advanceTimersByTimeAsync(999);
    expect(done).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    await p;
    expect(done).toBe(true);
    expect(listeners()).toBe(0);
  });

  it('rejects at once with signal.reason on abort, clearing its timer', async () => {
    const controller = new AbortController();
    const p = sleep(60_000, controller.signal);
    const reason = new Error('stop');
    controller.abort(reason);
    await expect(p).rejects.toBe(reason);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('rejects with the reason of a signal that was already aborted, without a timer', async () => {
    const reason = new Error('already');
    await expect(sleep(10, AbortSignal.abort(reason))).rejects.toBe(reason);
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe('retry', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('retries failures until an attempt succeeds, waiting the backoff between attempts', async () => {
    const seen: number[] = [];
    const delays: number[] = [];
    const p = retry(
      async (attempt) => {
        seen.push(attempt);
        if (attempt < 3) throw new Error(`fail ${attempt}`);
        return 'ok';
      },
      { attempts: 5, baseMs: 100, maxMs: 1000, random: () => 0.5, onRetry: (_e, _a, d) => delays.push(d) },
    );
    await vi.runAllTimersAsync();
    await expect(p).resolves.toBe('ok');
    expect(seen).toEqual([1, 2, 3]);
    expect(delays).toEqual([50, 100]);
  });

  it('gives up after the last attempt with the last failure, or what `exhausted` makes of it', async () => {
    let calls = 0;
    const p = retry(
      async (attempt) => {
        calls++;
        throw new Error(`fail ${attempt}`);
      },
      { attempts: 3, baseMs: 1 },
    );
    const check = expect(p).rejects.toThrow('fail 3');
    await vi.runAllTimersAsync();
    await check;
    expect(calls).toBe(3);

    const q = retry(
      async () => {
        throw new Error('down');
      },
      { attempts: 2, baseMs: 1, exhausted: (err, n) => new Error(`${(err as Error).message} after ${n}`) },
    );
    const check2 = expect(q).rejects.toThrow('down after 2');
    await vi.runAllTimersAsync();
    await check2;
  });

  it('rethrows a failure the predicate refuses without retrying it', async () => {
    let calls = 0;
    const fatal = new Error('fatal');
    await expect(
      retry(
        async () => {
          calls++;
          throw fatal;
        },
        { attempts: 10, retryable: (err) => err !== fatal },
      ),
    ).rejects.toBe(fatal);
    expect(calls).toBe(1);
  });

  it('retries without bound when attempts is Infinity, until the signal aborts the wait', async () => {
    const { controller, listeners } = countingSignal();
    let calls = 0;
    const reason = new Error('closed');
    const p = retry(
      async () => {
        calls++;
        if (calls === 20) controller.abort(reason);
        throw new Error('unavailable');
      },
      { attempts: Infinity, baseMs: 100, maxMs: 2000, signal: controller.signal },
    );
    const check = expect(p).rejects.toBe(reason);
    await vi.runAllTimersAsync();
    await check;
    expect(calls).toBe(20);
    expect(listeners()).toBe(0);
  });

  it('rejects with signal.reason during a backoff wait, starting no further attempt', async () => {
    const controller = new AbortController();
    let calls = 0;
    const p = retry(
      async () => {
        calls++;
        throw new Error('unavailable');
      },
      { attempts: 5, baseMs: 10_000, maxMs: 10_000, random: () => 0.99, signal: controller.signal },
    );
    const check = expect(p).rejects.toThrow('caller gave up');
    await vi.advanceTimersByTimeAsync(0);
    expect(calls).toBe(1);
    controller.abort(new Error('caller gave up'));
    await check;
    await vi.runAllTimersAsync();
    expect(calls).toBe(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('does not start when the signal is already aborted', async () => {
    const fn = vi.fn(async () => 'never');
    const reason = new Error('early');
    await expect(retry(fn, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    expect(fn).not.toHaveBeenCalled();
  });
});
