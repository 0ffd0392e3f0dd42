// The status-bar item's content, computed from the server's `codellama/status` notifications and the
// client's own view of the process. Pure functions: the vscode wiring lives in extension.ts.

/** `codellama/status` params (lsp_server/README.md). Every field may be missing or null. */
export interface ServerStatus {
  state?: "starting" | "loading" | "ready" | "error" | "disabled" | string;
  model?: string | null;
  backend?: string | null;
  description?: string | null;
  device?: string | null;
  dtype?: string | null;
  kvCacheDtype?: string | null;
  message?: string | null;
  indexing?: boolean;
  indexedFiles?: number | null;
  lastLatencyMs?: number | null;
  lastPromptTokens?: number | null;
  lastCachedTokens?: number | null;
  lastFromCache?: boolean | null;
  /** This session's acceptance statistics, kept by the server (lsp_server/acceptance.py). */
  acceptance?: Acceptance | null;
  /** The LoRA adapter in use: from the `adapter` setting, or trained on this workspace and accepted. */
  adapter?: AdapterStatus | null;
  /** The adapter training in progress (lsp_server/adapt/commands.py), null when none runs. */
  training?: { message?: string | null; percentage?: number | null } | null;
}

export interface AdapterStatus {
  path?: string;
  source?: "setting" | "workspace" | string;
  applied?: boolean;
  exactMatchBefore?: number | null;
  exactMatchAfter?: number | null;
}

/** "Adapter: trained on this workspace (exact match 4.1 % → 8.3 %)", or where it comes from. */
export function formatAdapter(a: AdapterStatus | null | undefined): string | undefined {
  if (!a || !a.path) return undefined;
  if (a.source === "setting") return `Adapter: ${a.path} (setting codellama.adapter)`;
  if (a.applied === false) return "Adapter trained on this workspace: not applied (it was trained for another model)";
  const gain =
    typeof a.exactMatchBefore === "number" && typeof a.exactMatchAfter === "number"
      ? ` (exact match ${a.exactMatchBefore.toFixed(1)} % → ${a.exactMatchAfter.toFixed(1)} %)`
      : "";
  return `Adapter: trained on this workspace${gain}`;
}

export interface Acceptance {
  shown?: number;
  accepted?: number;
  acceptedWord?: number;
  acceptedLine?: number;
  dismissed?: number;
  typedThrough?: number;
}

/** "Suggestions this session: 12 shown · 5 accepted (3 whole, 1 word, 1 line) · 4 dismissed · 2 typed through". */
export function formatAcceptance(a: Acceptance | null | undefined): string | undefined {
  if (!a || !a.shown) return undefined;
  const whole = a.accepted ?? 0;
  const word = a.acceptedWord ?? 0;
  const line = a.acceptedLine ?? 0;
  return (
    `Suggestions this session: ${a.shown} shown · ${whole + word + line} accepted (${whole} whole, ${word} word, ${line} line)` +
    ` · ${a.dismissed ?? 0} dismissed · ${a.typedThrough ?? 0} typed through`
  );
}

/** What the client knows on its own: is the process up, and are suggestions switched on. */
export type ProcessState = "starting" | "running" | "stopped" | "failed";

export interface StatusView {
  text: string;
  tooltip: string;
  /** "error" and "warning" map to the status bar's error/warning colours. */
  severity: "normal" | "warning" | "error";
}

export interface StatusInput {
  process: ProcessState;
  enabled: boolean;
  server?: ServerStatus;
  /** Set when the process stopped; one readable sentence. */
  failure?: string;
}

export function formatLatency(ms: number | null | undefined): string | undefined {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return undefined;
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

/** Merges a notification into the last known status (absent keys keep their previous values). */
export function mergeStatus(previous: ServerStatus | undefined, update: ServerStatus): ServerStatus {
  const merged: ServerStatus = { ...(previous ?? {}) };
  for (const [key, value] of Object.entries(update)) {
    if (value !== undefined) (merged as Record<string, unknown>)[key] = value;
  }
  return merged;
}

export function renderStatus(input: StatusInput): StatusView {
  const s = input.server ?? {};
  const model = s.model ?? (s.backend && s.backend !== "local" ? s.backend : undefined);
  const toggleHint = input.enabled ? "Click to turn inline suggestions off." : "Click to turn inline suggestions on.";
  const details: string[] = [];
  if (s.description) details.push(s.description);
  else if (model) details.push(`Model: ${model}`);
  if (s.device) {
    const kv = s.kvCacheDtype && s.kvCacheDtype !== s.dtype ? `, ${s.kvCacheDtype} KV cache` : "";
    details.push(`Device: ${s.device}${s.dtype ? ` (${s.dtype}${kv})` : ""}`);
  }
  if (s.indexing) details.push("Indexing the workspace…");
  else if (typeof s.indexedFiles === "number") details.push(`Workspace index: ${s.indexedFiles} files`);
  const latency = formatLatency(s.lastLatencyMs);
  if (latency) {
    let line = `Last suggestion: ${latency}`;
    if (s.lastFromCache) line += " (from cache)";
    else if (typeof s.lastPromptTokens === "number") {
      line += `, ${s.lastPromptTokens} prompt tokens`;
      if (typeof s.lastCachedTokens === "number") line += ` (${s.lastCachedTokens} reused)`;
    }
    details.push(line);
  }
  const acceptance = formatAcceptance(s.acceptance);
  if (acceptance) details.push(acceptance);
  const adapter = formatAdapter(s.adapter);
  if (adapter) details.push(adapter);
  if (s.training) details.push(`Training an adapter: ${s.training.message ?? "running"}`);

  if (input.process === "failed" || input.process === "stopped") {
    return {
      text: "$(debug-disconnect) Code Llama: stopped",
      tooltip: [input.failure ?? "The language server is not running.", "Run 'Code Llama: Restart language server'."].join("\n"),
      severity: input.process === "failed" ? "error" : "warning",
    };
  }
  if (input.process === "starting" && !input.server) {
    return { text: "$(loading~spin) Code Llama", tooltip: "Starting the language server…", severity: "normal" };
  }
  if (s.state === "error") {
    return {
      text: `$(error) Code Llama${model ? `: ${model}` : ""}`,
      tooltip: [s.message ?? "The model could not be loaded.", ...details, toggleHint].join("\n"),
      severity: "error",
    };
  }
  if (!input.enabled || s.state === "disabled") {
    return { text: "$(circle-slash) Code Llama: off", tooltip: [...details, toggleHint].join("\n"), severity: "normal" };
  }
  if (s.state === "loading" || s.state === "starting") {
    return {
      text: `$(loading~spin) Code Llama: loading${model ? ` ${model}` : ""}`,
      tooltip: ["Loading the model…", ...details, toggleHint].join("\n"),
      severity: "normal",
    };
  }
  const parts = [model ?? "Code Llama"];
  if (s.device) parts.push(s.device);
  if (latency) parts.push(latency);
  const icon = s.indexing ? "$(sync~spin)" : "$(sparkle)";
  return { text: `${icon} ${parts.join(" · ")}`, tooltip: [...details, toggleHint].join("\n"), severity: "normal" };
}
