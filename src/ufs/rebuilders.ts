/**
 * Registers the store adapters' rebuilders (src/ufs/portable.ts). Imported for its
 * effect, statically: a thread entry that imports it can rebuild every adapter (a
 * dynamic import of a sibling .ts module does not resolve in a worker thread under tsx).
 */
import { HttpUfs, type HttpUfsOptions } from './http.js';
import { LocalUfs, type LocalUfsOptions } from './local.js';
import { registerRebuilder } from './portable.js';
import { UfsRouter, type UfsOptions } from './router.js';
import { S3Ufs, type S3UfsOptions } from './s3.js';

// The options come from the class's own `portableSpec()`; each constructor validates them.
registerRebuilder('local', (spec) => new LocalUfs(spec.options as LocalUfsOptions));
registerRebuilder('s3', (spec) => new S3Ufs(spec.options as S3UfsOptions));
registerRebuilder('http', (spec) => new HttpUfs(spec.options as HttpUfsOptions));
registerRebuilder('router', (spec) => new UfsRouter(spec.options as UfsOptions));
