// Which `codellama.*` settings belong to the language server, and how they are sent to it.
//
// The server's keys are listed in lsp_server/README.md. Every one of them is contributed in
// package.json; the few keys below are read by the extension itself and never sent.

/** Settings the extension uses itself (relative to the `codellama` section). */
export const CLIENT_ONLY_KEYS: readonly string[] = ["pythonPath", "train.extraArgs", "trace.server"];

/** The server keys, in the order of the server's README. */
export const SERVER_KEYS: readonly string[] = [
  "model",
  "adapter",
  "device",
  "dtype",
  "fimFormat",
  "maxContextTokens",
  "maxNewTokens",
  "temperature",
  "backend",
  "enable",
  "repositoryContext",
  "multiline",
  "exclude",
  "speculativeDecoding",
  "kvCacheMb",
];

/** The part of vscode.WorkspaceConfiguration this module needs (so tests can pass a plain object). */
export interface ConfigReader {
  get<T>(key: string): T | undefined;
}

/** Keys of the `codellama` section contributed in a package.json manifest. */
export function contributedKeys(manifest: { contributes?: { configuration?: { properties?: object } } }): string[] {
  const properties = manifest.contributes?.configuration?.properties ?? {};
  return Object.keys(properties)
    .filter((k) => k.startsWith("codellama."))
    .map((k) => k.slice("codellama.".length));
}

/**
 * The settings object the server gets: every server key with its effective value (the user's value
 * or the contributed default). All keys are sent every time because the server keeps a key's previous
 * value when it is absent, so a setting the user removes must arrive as its default.
 * Empty strings become null ("not set"), as the server reads them.
 */
export function serverSettings(config: ConfigReader, keys: readonly string[] = SERVER_KEYS): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of keys) {
    let value = config.get<unknown>(key);
    if (value === undefined) continue;
    if (typeof value === "string" && value.trim() === "" && (key === "model" || key === "adapter")) value = null;
    setPath(out, key, value);
  }
  return out;
}

/** `initializationOptions` for `initialize`: the server accepts the section under a `codellama` key. */
export function initializationOptions(config: ConfigReader): { codellama: Record<string, unknown> } {
  return { codellama: serverSettings(config) };
}

/** Does a configuration change event touch anything the server must hear about? */
export function affectsServer(affects: (section: string) => boolean): boolean {
  return SERVER_KEYS.some((key) => affects(`codellama.${key}`));
}

/** Does a change need a new server process (a different Python)? */
export function affectsServerProcess(affects: (section: string) => boolean): boolean {
  return affects("codellama.pythonPath");
}

function setPath(target: Record<string, unknown>, dotted: string, value: unknown): void {
  const parts = dotted.split(".");
  let node = target;
  for (const part of parts.slice(0, -1)) {
    if (typeof node[part] !== "object" || node[part] === null) node[part] = {};
    node = node[part] as Record<string, unknown>;
  }
  node[parts[parts.length - 1]] = value;
}
