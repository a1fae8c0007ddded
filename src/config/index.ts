export { loadConfig, flagsFromCommand, readConfigFile, type ConfigSource, type LoadConfigOptions, type LoadedConfig } from './load.js';
export { SECTIONS, CONFIG_ENV, envName, flagName, type ConfigValues, type KeySpec, type SectionName, type SectionSpec, type SectionValues } from './keys.js';
export { bool, bytes, duration, int, list, oneOf, parseBytes, str, urlList, type ValueSchema } from './values.js';
