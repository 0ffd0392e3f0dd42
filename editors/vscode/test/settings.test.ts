import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "fs";
import * as path from "path";
import { API_KEY_SECRET, CLIENT_ONLY_KEYS, affectsServer, contributedKeys, initializationOptions, serverSchema, serverSettings } from "../src/settings";

const manifest = JSON.parse(fs.readFileSync(path.join(__dirname, "..", "..", "package.json"), "utf8"));
const properties = manifest.contributes.configuration.properties as Record<string, { default?: unknown }>;
const schema = serverSchema(manifest);
const SERVER_KEYS = schema.keys;

/** A config reader over the package.json defaults plus the given user values, like VS Code's. */
function config(user: Record<string, unknown> = {}) {
  return {
    get<T>(key: string): T | undefined {
      if (key in user) return user[key] as T;
      return properties[`codellama.${key}`]?.default as T | undefined;
    },
  };
}

test("the server keys are the contributed keys but the client's own; each has a description", () => {
  const contributed = contributedKeys(manifest).sort();
  for (const key of ["model", "adapter", "device", "dtype", "fimFormat", "maxContextTokens", "maxNewTokens", "temperature", "backend"]) {
    assert.ok(SERVER_KEYS.includes(key), `${key} is a server key`);
  }
  assert.deepEqual(contributed, [...SERVER_KEYS, ...CLIENT_ONLY_KEYS].sort());
  for (const key of contributed) {
    const spec = properties[`codellama.${key}`];
    assert.ok("description" in spec || "markdownDescription" in spec, `codellama.${key} has a description`);
  }
});

test("with nothing set, the server gets its own defaults for every key", () => {
  assert.deepEqual(serverSettings(config(), schema), {
    model: null,
    adapter: null,
    device: "auto",
    dtype: "auto",
    quantization: "none",
    kvCacheDtype: "auto",
    fimFormat: "spm",
    maxContextTokens: null,
    maxNewTokens: 128,
    temperature: 0,
    backend: "local",
    enable: true,
    repositoryContext: true,
    knownNames: true,
    copyFromPrompt: true,
    prefetchAfterAccept: true,
    multiline: "auto",
    exclude: [],
    apiKey: null,
    remoteModel: null,
    instructModel: null,
    instructMaxNewTokens: 512,
    instructCapable: null,
    speculativeDecoding: true,
    cudaGraphs: true,
    compileDecode: "off",
    kvCacheMb: 512,
  });
});

test("user values are sent under their server names; client-only keys are not sent", () => {
  const settings = serverSettings(
    config({ model: "~/models/CodeLlama-7b-hf", device: "cuda", maxContextTokens: 16384, pythonPath: "/usr/bin/python3", "train.steps": 5 }),
    schema,
  );
  assert.equal(settings.model, "~/models/CodeLlama-7b-hf");
  assert.equal(settings.device, "cuda");
  assert.equal(settings.maxContextTokens, 16384);
  assert.ok(!("pythonPath" in settings));
  assert.ok(!("train" in settings));
  assert.ok(!("trace" in settings));
});

test("an empty path or name means the default (null)", () => {
  const settings = serverSettings(config({ model: "", adapter: "  ", instructModel: "", remoteModel: " ", apiKey: "" }), schema);
  for (const key of ["model", "adapter", "instructModel", "remoteModel", "apiKey"]) assert.equal(settings[key], null, key);
});

test("the API key from secret storage is sent, and wins over the setting", () => {
  assert.equal(API_KEY_SECRET, "codellama.apiKey");
  assert.equal(serverSettings(config(), schema, "sk-secret").apiKey, "sk-secret");
  assert.equal(serverSettings(config({ apiKey: "sk-in-settings" }), schema, "sk-secret").apiKey, "sk-secret");
  assert.equal(serverSettings(config({ apiKey: "sk-in-settings" }), schema).apiKey, "sk-in-settings");
});

test("initializationOptions put the section under a codellama key", () => {
  const options = initializationOptions(config({ temperature: 0.2 }), schema);
  assert.deepEqual(Object.keys(options), ["codellama"]);
  assert.equal(options.codellama.temperature, 0.2);
});

test("dotted keys become nested objects", () => {
  assert.deepEqual(serverSettings(config({ "context.maxSnippets": 3 }), { keys: ["context.maxSnippets"], nullable: new Set() }), { context: { maxSnippets: 3 } });
});

test("only server keys count as a server settings change", () => {
  assert.equal(affectsServer((s) => s === "codellama.maxNewTokens", schema), true);
  assert.equal(affectsServer((s) => s === "codellama.pythonPath", schema), false);
  assert.equal(affectsServer((s) => s === "editor.fontSize", schema), false);
});
