export * from '../../src/netem/fault-proxy.js';
