/**
 * A circuit breaker per worker. A failure opens it: the client sends that worker's
 * reads to the store (or the next replica) for `cooldownMs`; then one probe is let
 * through (half-open). A success closes it; a failure reopens it with the cooldown
 * doubled, up to `maxCooldownMs`, so a dead worker costs one probe per cooldown,
 * not a retry storm.
 */
export type BreakerState = 'closed' | 'open' | 'half-open';

export interface BreakerOptions {
  /** First cooldown after a failure. @default 2000 */
  cooldownMs?: number;
  /** Longest cooldown after repeated failures. @default 30_000 */
  maxCooldownMs?: number;
  /** Clock, for tests. */
  now?: () => number;
}

export class CircuitBreaker {
  readonly #cooldownMs: number;
  readonly #maxCooldownMs: number;
  readonly #now: () => number;
  #state: BreakerState = 'closed';
  #openUntil = 0;
  #currentCooldown: number;
  #probeInFlight = false;

  constructor(options: BreakerOptions = {}) {
    this.#cooldownMs = options.cooldownMs ?? 2000;
    this.#maxCooldownMs = options.maxCooldownMs ?? 30_000;
    this.#now = options.now ?? Date.now;
    this.#currentCooldown = this.#cooldownMs;
  }

  get state(): BreakerState {
    if (this.#state === 'open' && this.#now() >= this.#openUntil) this.#state = 'half-open';
    return this.#state;
  }

  /** Whether a request may go to the worker now. In half-open state only one probe at a time may. */
  allow(): boolean {
    const s = this.state;
    if (s === 'closed') return true;
    if (s === 'open' || this.#probeInFlight) return false;
    this.#probeInFlight = true;
    return true;
  }

  success(): void {
    this.#probeInFlight = false;
    this.#state = 'closed';
    this.#currentCooldown = this.#cooldownMs;
  }

  failure(): void {
    const wasProbe = this.state === 'half-open';
    this.#probeInFlight = false;
    this.#state = 'open';
    if (wasProbe) this.#currentCooldown = Math.min(this.#maxCooldownMs, this.#currentCooldown * 2);
    this.#openUntil = this.#now() + this.#currentCooldown;
  }
}
