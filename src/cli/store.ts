import { Option, type Command } from 'commander';
import { createUfs, type UfsRouter } from '../ufs/router.js';

/** Store options shared by every command that reads or writes a store URL. */
export interface StoreOptions {
  s3Endpoint?: string | undefined;
  s3Region?: string | undefined;
  s3PathStyle?: boolean | undefined;
}

/**
 * Add `--s3-endpoint`, `--s3-region` and `--s3-path-style` to a command. Credentials
 * come from the standard AWS chain (AWS_ACCESS_KEY_ID, profiles, ...), never flags.
 */
export function addStoreOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--s3-endpoint <url>', 'S3-compatible endpoint for s3:// URLs').env('GRANARY_S3_ENDPOINT'))
    .addOption(new Option('--s3-region <region>', 'S3 region (default: AWS_REGION, else us-east-1)').env('GRANARY_S3_REGION'))
    .addOption(new Option('--s3-path-style', 'address buckets as endpoint/bucket/key (default when --s3-endpoint is set)'));
}

/** A store client for the command's options: routes s3://, file:// and http(s):// URLs. */
export function ufsFromOptions(options: StoreOptions): UfsRouter {
  return createUfs({
    s3: { endpoint: options.s3Endpoint, region: options.s3Region, forcePathStyle: options.s3PathStyle },
  });
}
