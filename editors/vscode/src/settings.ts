// Which `codellama.*` settings belong to the language server, and how they are sent to it.
//
// One source: every key the extension contributes in package.json is a server key (lsp_server/README.md
// lists them), except the few below that the extension reads itself and never sends.
// tests/editors/test_settings_drift.py fails when a server setting is missing from package.json.

/** Settings the extension uses itself (relative to the `codellama` section). */
export const CLIENT_ONLY_KEYS: readonly string[] = ["pythonPath", "train.steps", "trace.server"];

/** The secret-storage key of the API key set with 'Code Llama: Set API key'. */
export const API_KEY_SECRET = "codellama.apiKey";

/** The part of a package.json manifest this module reads. */
export interface Manifest {
  contributes?: { configuration?: { properties?: Record<string, { type?: string | string[] }> } };
}

/** The server's keys and which of them take null ("not set"). */
export interface ServerSchema {
  keys: readonly string[];
  nullable: ReadonlySet<string>;
}

/** The part of vscode.WorkspaceConfiguration this module needs (so tests can pass a plain object). */
export interface ConfigReader {
  get<T>(key: string): T | undefined;
}

/** Keys of the `codellama` section contributed in a package.json manifest. */
export function contributedKeys(manifest: Manifest): string[] {
  const properties = manifest.contributes?.configuration?.properties ?? {};
  return Object.keys(properties)
    .filter((k) => k.startsWith("codellama."))
    .map((k) => k.slice("codellama.".length));
}

/** The server keys of a manifest: every contributed key but the client's own, in manifest order. */
export function serverSchema(manifest: Manifest): ServerSchema {
  const properties = manifest.contributes?.configuration?.properties ?? {};
  const keys = contributedKeys(manifest).filter((k) => !CLIENT_ONLY_KEYS.includes(k));
  const nullable = new Set(keys.filter((k) => [properties[`codellama.${k}`]?.type].flat().includes("null")));
  return { keys, nullable };
}

/**
 * The settings object the server gets: every server key with its effective value (the user's value
 * or the contributed default). All keys are sent every time because the server keeps a key's previous
 * value when it is absent, so a setting the user removes must arrive as its default.
 * Blank strings of keys that take null become null ("not set"), as the server reads them.
 * `apiKey`, when given, is the key from secret storage: it wins over the setting.
 */
export function serverSettings(config: ConfigReader, schema: ServerSchema, apiKey?: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of schema.keys) {
    let value = config.get<unknown>(key);
    if (key === "apiKey" && apiKey) value = apiKey;
    if (value === undefined) continue;
    if (typeof value === "string" && value.trim() === "" && schema.nullable.has(key)) value = null;
    setPath(out, key, value);
  }
  return out;
}

/** `initializationOptions` for `initialize`: the server accepts the section under a `codellama` key. */
export function initializationOptions(
  config: ConfigReader,
  schema: ServerSchema,
  apiKey?: string,
): { codellama: Record<string, unknown> } {
  return { codellama: serverSettings(config, schema, apiKey) };
}

/** Does a configuration change event touch anything the server must hear about? */
export function affectsServer(affects: (section: string) => boolean, schema: ServerSchema): boolean {
  return schema.keys.some((key) => affects(`codellama.${key}`));
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
