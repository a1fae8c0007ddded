import { describe, expect, it } from 'vitest';
import { CircuitBreaker } from '../../src/cache/breaker.js';

describe('circuit breaker', () => {
  it('opens on a failure, lets one probe through after the cooldown, and closes on its success', () => {
    let now = 0;
    const b = new CircuitBreaker({ cooldownMs: 1000, maxCooldownMs: 4000, now: () => now });
    expect(b.allow()).toBe(true);
    b.failure();
    expect(b.state).toBe('open');
    expect(b.allow()).toBe(false);
    now = 999;
    expect(b.allow()).toBe(false);
    now = 1000;
    expect(b.state).toBe('half-open');
    expect(b.allow()).toBe(true);
    // Only one probe at a time.
    expect(b.allow()).toBe(false);
    b.success();
    expect(b.state).toBe('closed');
    expect(b.allow()).toBe(true);
  });

  it('doubles the cooldown after a failed probe, up to the maximum', () => {
    let now = 0;
    const b = new CircuitBreaker({ cooldownMs: 1000, maxCooldownMs: 3000, now: () => now });
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
  });
});
