// The extension's client code against the real language server over stdio: the Python the extension
// resolves (this repository's .venv), the command line and process handling from serverProcess.ts, the
// initializationOptions and `workspace/configuration` answers from settings.ts, and the status bar text
// from status.ts, with the default model (no codellama.model set). JSON-RPC goes through
// vscode-jsonrpc, the library vscode-languageclient itself uses.
//
// Skipped when the repository has no .venv (run `make install` first); `make editors` always has one.
import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { createMessageConnection, MessageConnection, StreamMessageReader, StreamMessageWriter } from "vscode-jsonrpc/node";
import { resolvePython, serverCommand } from "../src/python";
import { describeExit, spawnServer } from "../src/serverProcess";
import { ConfigReader, initializationOptions, serverSchema, serverSettings } from "../src/settings";
import { renderStatus, ServerStatus } from "../src/status";

const extensionPath = path.resolve(__dirname, "..", "..");
const repo = path.resolve(extensionPath, "..", "..");
const manifest = JSON.parse(fs.readFileSync(path.join(extensionPath, "package.json"), "utf8"));
const schema = serverSchema(manifest);
const properties = manifest.contributes.configuration.properties as Record<string, { default?: unknown }>;

/** Like VS Code's configuration: the contributed defaults with the user's values on top. */
function config(user: Record<string, unknown>): ConfigReader {
  return {
    get<T>(key: string): T | undefined {
      return (key in user ? user[key] : properties[`codellama.${key}`]?.default) as T | undefined;
    },
  };
}

const resolved = resolvePython({
  configured: process.env.CODELLAMA_TEST_PYTHON,
  workspaceFolders: [],
  extensionPath,
  platform: process.platform,
  exists: (p) => fs.existsSync(p),
  hasServer: () => false,
});
const skip = resolved.source === "PATH" ? "no .venv in the repository (run `make install`)" : false;

const LIMIT_MS = 15 * 60 * 1000; // a busy CPU-only machine loads torch slowly

test("talks to the real language server over stdio: initialize, status, inline completion, settings, shutdown", { skip, timeout: LIMIT_MS }, async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "codellama-vscode-"));
  const env = { OMP_NUM_THREADS: "1", OMP_WAIT_POLICY: "PASSIVE", PYTHONPATH: repo };
  const workspace = path.join(tmp, "project");
  fs.mkdirSync(workspace);
  // A header and its docstring: the body is code (with the header alone this small model starts a
  // long docstring that a short token budget cuts off, and an unfinished suggestion is not shown).
  const source = 'def add(a, b):\n    """Return the sum of a and b."""\n    \n\n\nprint(add(1, 2))\n';
  fs.writeFileSync(path.join(workspace, "calc.py"), source);

  // No model set: the server loads the default one (models/default in the repository).
  let user: Record<string, unknown> = { maxNewTokens: 64, pythonPath: resolved.python };
  const command = serverCommand(resolved.python, ["--log-level", "info"]);
  const proc = spawnServer(command, { cwd: workspace, env });
  const exited = new Promise<string>((resolve) => {
    proc.child.once("error", (err) => resolve(describeExit(command, null, null, proc.stderr, err)));
    proc.child.once("exit", (code, signal) => resolve(describeExit(command, code, signal, proc.stderr)));
  });
  const connection: MessageConnection = createMessageConnection(
    new StreamMessageReader(proc.child.stdout!),
    new StreamMessageWriter(proc.child.stdin!),
  );
  const statuses: ServerStatus[] = [];
  const pulled: unknown[] = [];
  connection.onNotification("codellama/status", (params: ServerStatus) => void statuses.push(params));
  connection.onNotification("$/progress", () => undefined);
  connection.onNotification("window/logMessage", () => undefined);
  connection.onNotification("window/showMessage", (params: { message: string }) => void statuses.push({ message: params.message }));
  connection.onRequest("window/workDoneProgress/create", () => null);
  connection.onRequest("client/registerCapability", () => null);
  // What extension.ts's configuration middleware answers: the server keys of the `codellama` section.
  connection.onRequest("workspace/configuration", (params: { items: Array<{ section?: string }> }) => {
    const answer = params.items.map((item) => (item.section === "codellama" ? serverSettings(config(user), schema) : null));
    pulled.push(answer[0]);
    return answer;
  });
  connection.listen();
  // Requests fail with the server's own last words if the process dies first.
  const died = exited.then((why) => Promise.reject(new Error(`the server stopped: ${why}`)));
  died.catch(() => undefined);
  const request = <R>(method: string, params?: unknown) => Promise.race([connection.sendRequest<R>(method, params), died]);

  try {
    const init = await request<{ capabilities: Record<string, unknown> }>("initialize", {
      processId: process.pid,
      rootUri: `file://${workspace}`,
      workspaceFolders: [{ uri: `file://${workspace}`, name: "project" }],
      capabilities: {
        textDocument: { inlineCompletion: { dynamicRegistration: false }, synchronization: { didSave: true } },
        workspace: { configuration: true, didChangeConfiguration: { dynamicRegistration: false } },
        window: { workDoneProgress: true },
      },
      initializationOptions: initializationOptions(config(user), schema),
    });
    assert.ok(init.capabilities.inlineCompletionProvider, "the server offers inline completion");
    await connection.sendNotification("initialized", {});

    // The status the status bar shows, until the model is loaded.
    const deadline = Date.now() + LIMIT_MS - 60_000;
    let status = await request<ServerStatus>("codellama/getStatus");
    while (status.state !== "ready" || status.indexing) {
      assert.notEqual(status.state, "error", `the model failed to load: ${status.message}`);
      assert.ok(Date.now() < deadline, `the server never became ready: ${JSON.stringify(status)}`);
      await new Promise((r) => setTimeout(r, 250));
      status = await request<ServerStatus>("codellama/getStatus");
    }
    assert.equal(status.model, "default", "with no model set, the server loads the default model");
    assert.ok(status.device === "cpu" || String(status.device).startsWith("cuda"), `a device: ${status.device}`);
    assert.ok(statuses.some((s) => s.state === "ready"), "codellama/status notifications arrive");
    assert.equal(renderStatus({ process: "running", enabled: true, server: status }).text, `$(sparkle) default · ${status.device}`);
    assert.ok(pulled.length >= 1, "the server pulled workspace/configuration");
    assert.deepEqual(pulled[0], serverSettings(config(user), schema));

    const uri = `file://${workspace}/calc.py`;
    await connection.sendNotification("textDocument/didOpen", { textDocument: { uri, languageId: "python", version: 1, text: source } });
    const position = { line: 2, character: 4 };
    const result = await request<{ items: Array<{ insertText: unknown; range?: { start: unknown; end: unknown } }> }>(
      "textDocument/inlineCompletion",
      { textDocument: { uri }, position, context: { triggerKind: 1 } }, // Invoked
    );
    assert.ok(Array.isArray(result.items), "an InlineCompletionList");
    assert.ok(result.items.length >= 1, "the default model suggests something after a function header");
    for (const item of result.items) {
      assert.equal(typeof item.insertText, "string");
      assert.ok((item.insertText as string).trim() !== "", "not a blank suggestion");
      assert.deepEqual(item.range?.start, position, "the suggestion starts at the cursor");
    }
    const afterCompletion = await request<ServerStatus>("codellama/getStatus");
    assert.equal(typeof afterCompletion.lastLatencyMs, "number", "the latency shown in the status bar");

    // Switching suggestions off (the status-bar click) is pushed as didChangeConfiguration.
    user = { ...user, enable: false };
    await connection.sendNotification("workspace/didChangeConfiguration", { settings: { codellama: serverSettings(config(user), schema) } });
    const off = await request<{ items: unknown[] }>("textDocument/inlineCompletion", { textDocument: { uri }, position, context: { triggerKind: 1 } });
    assert.deepEqual(off.items, [], "a disabled server suggests nothing");

    await request("shutdown");
    await connection.sendNotification("exit");
    assert.match(await exited, /exited with code 0/);
  } finally {
    connection.dispose();
    if (proc.child.exitCode === null) proc.child.kill();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
