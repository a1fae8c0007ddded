import { PROFILES } from '../netem/fault-proxy.js';

/** The fault proxy's named network profiles, as the demo's `--profile` accepts them. */
export type ProfileName = keyof typeof PROFILES;
export const PROFILE_NAMES = Object.keys(PROFILES) as ProfileName[];
