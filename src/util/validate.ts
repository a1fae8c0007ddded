/**
 * Option validators shared by every subsystem, so a CLI flag, a constructor option and
 * a worker-thread spec all fail the same way: the option's name, what came in and its type.
 */
import { InvalidArgumentError } from '../errors.js';

/** A value as it came in, for an error message. */
export function show(value: unknown): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint' || value === undefined || value === null) return String(value);
  try {
    return JSON.stringify(value) ?? typeof value;
  } catch {
    return typeof value;
  }
}

/**
 * An integer option from `min` to `max`; `name` as the user spelled it.
 *
 * @example
 * const depth = checkInt('prefetch', options.prefetch ?? 4, 1);
 */
export function checkInt(name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `from ${min} and up` : `from ${min} to ${max}`;
    throw new InvalidArgumentError(`Expected \`${name}\` to be an integer ${range}, got \`${show(value)}\` (${typeof value})`);
  }
  return value;
}

/** `checkInt` for an optional option: `undefined` gives `dflt` (which is not checked). */
export function optionalInt(name: string, value: unknown, dflt: number, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  return value === undefined ? dflt : checkInt(name, value, min, max);
}

/** A non-empty string option. */
export function checkString(name: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new InvalidArgumentError(`Expected \`${name}\` to be a non-empty string, got \`${show(value)}\` (${typeof value})`);
  }
  return value;
}
