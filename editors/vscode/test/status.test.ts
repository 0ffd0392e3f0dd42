import { test } from "node:test";
import * as assert from "node:assert/strict";
import { formatLatency, mergeStatus, renderStatus } from "../src/status";

const ready = {
  state: "ready",
  model: "CodeLlama-7b-hf",
  description: "local: CodeLlama-7b-hf (cuda, bfloat16)",
  device: "cuda",
  dtype: "bfloat16",
  indexing: false,
  indexedFiles: 412,
  lastLatencyMs: 143.2,
  lastPromptTokens: 1834,
  lastCachedTokens: 1790,
  lastFromCache: false,
};

test("ready: model, device and last latency in the bar; details in the tooltip", () => {
  const view = renderStatus({ process: "running", enabled: true, server: ready });
  assert.equal(view.text, "$(sparkle) CodeLlama-7b-hf · cuda · 143 ms");
  assert.match(view.tooltip, /1834 prompt tokens \(1790 reused\)/);
  assert.match(view.tooltip, /412 files/);
  assert.match(view.tooltip, /Click to turn inline suggestions off/);
  assert.equal(view.severity, "normal");
});

test("loading and indexing show progress", () => {
  assert.equal(renderStatus({ process: "running", enabled: true, server: { state: "loading", model: "default-model" } }).text, "$(loading~spin) Code Llama: loading default-model");
  assert.match(renderStatus({ process: "running", enabled: true, server: { ...ready, indexing: true } }).text, /^\$\(sync~spin\)/);
  assert.equal(renderStatus({ process: "starting", enabled: true }).text, "$(loading~spin) Code Llama");
});

test("switched off, by the client or the server", () => {
  assert.equal(renderStatus({ process: "running", enabled: false, server: ready }).text, "$(circle-slash) Code Llama: off");
  assert.equal(renderStatus({ process: "running", enabled: true, server: { ...ready, state: "disabled" } }).text, "$(circle-slash) Code Llama: off");
});

test("errors are red and say what happened", () => {
  const view = renderStatus({ process: "running", enabled: true, server: { state: "error", model: "x", message: "Model directory not found: /nope" } });
  assert.equal(view.severity, "error");
  assert.match(view.tooltip, /Model directory not found/);
  const dead = renderStatus({ process: "failed", enabled: true, failure: "`python3 -m lsp_server` exited with code 1: ModuleNotFoundError: No module named 'lsp_server'" });
  assert.equal(dead.severity, "error");
  assert.match(dead.text, /stopped/);
  assert.match(dead.tooltip, /No module named/);
});

test("a notification updates only the keys it carries", () => {
  const merged = mergeStatus(ready, { lastLatencyMs: 12, lastFromCache: true });
  assert.equal(merged.model, "CodeLlama-7b-hf");
  assert.equal(merged.lastLatencyMs, 12);
  assert.match(renderStatus({ process: "running", enabled: true, server: merged }).tooltip, /12 ms \(from cache\)/);
  assert.equal(formatLatency(2500), "2.5 s");
  assert.equal(formatLatency(null), undefined);
});

test("the session's acceptance statistics are in the tooltip once something was shown", () => {
  const acceptance = { shown: 12, accepted: 3, acceptedWord: 1, acceptedLine: 1, dismissed: 4, typedThrough: 2 };
  const view = renderStatus({ process: "running", enabled: true, server: { ...ready, acceptance } });
  assert.match(view.tooltip, /Suggestions this session: 12 shown · 5 accepted \(3 whole, 1 word, 1 line\) · 4 dismissed · 2 typed through/);
  const none = renderStatus({ process: "running", enabled: true, server: { ...ready, acceptance: { ...acceptance, shown: 0 } } });
  assert.doesNotMatch(none.tooltip, /Suggestions this session/);
});

test("an int8 KV cache shows beside the dtype in the tooltip", () => {
  const server = { ...ready, description: null, kvCacheDtype: "int8" };
  assert.match(renderStatus({ process: "running", enabled: true, server }).tooltip, /Device: cuda \(bfloat16, int8 KV cache\)/);
  const same = { ...ready, description: null, kvCacheDtype: "bfloat16" };
  assert.doesNotMatch(renderStatus({ process: "running", enabled: true, server: same }).tooltip, /KV cache/);
});

test("the adapter in use and a training in progress show in the tooltip", () => {
  const adapted = { ...ready, adapter: { path: "/d/adapter", source: "workspace", applied: true, exactMatchBefore: 4.1, exactMatchAfter: 8.25 } };
  assert.match(renderStatus({ process: "running", enabled: true, server: adapted }).tooltip, /Adapter: trained on this workspace \(exact match 4\.1 % → 8\.3 %\)/);
  const explicit = { ...ready, adapter: { path: "/a", source: "setting" } };
  assert.match(renderStatus({ process: "running", enabled: true, server: explicit }).tooltip, /Adapter: \/a \(setting codellama\.adapter\)/);
  const training = { ...ready, training: { message: "training step 120/600, loss 1.90, ~4 min left", percentage: 40 } };
  assert.match(renderStatus({ process: "running", enabled: true, server: training }).tooltip, /Training an adapter: training step 120\/600/);
  assert.doesNotMatch(renderStatus({ process: "running", enabled: true, server: { ...ready, adapter: null, training: null } }).tooltip, /dapter/);
});
