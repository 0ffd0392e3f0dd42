// The controller with the `vscode` module stubbed and a fake language client: what the user sees in the
// status bar and in messages, and what the server is sent, for the common lifecycle events.
import { installVscodeStub, setUserSetting, shown, statusItems, userSettings, window, workspace } from "./vscodeStub";
installVscodeStub();

import { test, beforeEach } from "node:test";
import * as assert from "node:assert/strict";
import * as path from "path";
import type { ClientHooks, ClientLike } from "../src/controller";
// Loaded after the stub is installed (it imports "vscode").
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { ServerController } = require("../src/controller") as typeof import("../src/controller");

class FakeClient implements ClientLike {
  started = false;
  notifications: Array<{ method: string; params: unknown }> = [];
  handlers = new Map<string, (params: any) => void>();
  status: unknown = null;
  constructor(
    readonly hooks: ClientHooks,
    private readonly spawnOnStart = false,
  ) {}
  async start(): Promise<void> {
    // The real client spawns the server first; a spawn failure rejects start().
    if (this.spawnOnStart) await this.hooks.spawn();
    this.started = true;
  }
  async stop(): Promise<void> {
    this.started = false;
  }
  async sendNotification(method: string, params?: unknown): Promise<void> {
    this.notifications.push({ method, params });
  }
  async sendRequest<R>(method: string): Promise<R> {
    if (method === "codellama/getStatus") return this.status as R;
    throw new Error(`unexpected request ${method}`);
  }
  onNotification(method: string, handler: (params: any) => void) {
    this.handlers.set(method, handler);
    return { dispose: () => this.handlers.delete(method) };
  }
  notify(method: string, params: unknown): void {
    this.handlers.get(method)?.(params);
  }
}

const output = { append: () => undefined, appendLine: () => undefined, show: () => undefined, dispose: () => undefined } as any;
const extensionPath = path.join(__dirname, "..", "..");

function makeController(spawnOnStart = false) {
  const clients: FakeClient[] = [];
  const controller = new ServerController(extensionPath, (hooks) => {
    const c = new FakeClient(hooks, spawnOnStart);
    clients.push(c);
    return c;
  }, output);
  const item = statusItems[statusItems.length - 1];
  return { controller, clients, item };
}

const tick = () => new Promise((r) => setImmediate(r));

beforeEach(() => {
  userSettings.clear();
  shown.reset();
  workspace.workspaceFolders = undefined;
});

test("starts the server with the configured Python and the settings as initializationOptions", async () => {
  setUserSetting("codellama.pythonPath", "/opt/py/bin/python3");
  setUserSetting("codellama.maxNewTokens", 32);
  const { controller, clients, item } = makeController();
  assert.equal(item.text, "$(loading~spin) Code Llama");
  assert.equal(item.command, "codellama.toggle");
  await controller.start();
  const hooks = clients[0].hooks;
  assert.deepEqual(hooks.command, { command: "/opt/py/bin/python3", args: ["-m", "lsp_server"] });
  const init = hooks.initializationOptions() as { codellama: Record<string, unknown> };
  assert.equal(init.codellama.maxNewTokens, 32);
  assert.equal(init.codellama.model, null);
  assert.ok(!("pythonPath" in init.codellama));
  controller.dispose();
});

test("the status bar follows codellama/status notifications", async () => {
  const { controller, clients, item } = makeController();
  clients.length = 0;
  await controller.start();
  const client = clients[0];
  client.notify("codellama/status", { state: "loading", model: "default-model" });
  assert.equal(item.text, "$(loading~spin) Code Llama: loading default-model");
  client.notify("codellama/status", { state: "ready", device: "cpu", dtype: "bfloat16", lastLatencyMs: null });
  assert.equal(item.text, "$(sparkle) default-model · cpu");
  client.notify("codellama/status", { lastLatencyMs: 87.4 });
  assert.equal(item.text, "$(sparkle) default-model · cpu · 87 ms");
  controller.dispose();
});

/** An active editor in the stub, its cursor at (line, character) with nothing selected. */
function activeEditor(uri: string, version: number, line: number, character: number) {
  (window as any).activeTextEditor = {
    document: { uri: { toString: () => uri }, version },
    selection: { isEmpty: true, active: { line, character } },
  };
}

test("a suggestion asked for while the model loads is asked for again, once, when it is ready", async () => {
  const { controller, clients } = makeController();
  await controller.start();
  const client = clients[clients.length - 1];
  const triggers = () => shown.commands.filter((c) => c.command === "editor.action.inlineSuggest.trigger").length;
  client.notify("codellama/status", { state: "loading", model: "default" });
  client.hooks.onInlineRequest({ uri: "file:///p/a.py", version: 3, line: 4, character: 4 });
  activeEditor("file:///p/a.py", 3, 4, 4);
  client.notify("codellama/status", { state: "ready" });
  assert.equal(triggers(), 1, "asked again where the user waits");
  client.notify("codellama/status", { state: "ready", lastLatencyMs: 80 });
  assert.equal(triggers(), 1, "only once");

  // Reloaded (a model change), asked while loading, but the user typed on: nothing is asked for.
  client.notify("codellama/status", { state: "loading" });
  client.hooks.onInlineRequest({ uri: "file:///p/a.py", version: 4, line: 4, character: 5 });
  activeEditor("file:///p/a.py", 5, 4, 6);
  client.notify("codellama/status", { state: "ready" });
  assert.equal(triggers(), 1, "the document moved on");

  // Asked while ready: nothing to ask again.
  client.hooks.onInlineRequest({ uri: "file:///p/a.py", version: 5, line: 4, character: 6 });
  client.notify("codellama/status", { state: "loading" });
  client.notify("codellama/status", { state: "ready" });
  assert.equal(triggers(), 1);
  (window as any).activeTextEditor = undefined;
  controller.dispose();
});

test("clicking the status bar toggles completions: the setting, the server and the bar all change", async () => {
  const { controller, clients, item } = makeController();
  await controller.start();
  const client = clients[0];
  client.notify("codellama/status", { state: "ready", model: "m", device: "cpu" });
  assert.equal(client.hooks.isEnabled(), true);
  await controller.toggle();
  await tick();
  assert.equal(userSettings.get("codellama.enable"), false);
  assert.equal(client.hooks.isEnabled(), false, "inline requests are gated client-side at once");
  assert.equal(item.text, "$(circle-slash) Code Llama: off");
  const sent = client.notifications.filter((n) => n.method === "workspace/didChangeConfiguration");
  assert.equal(sent.length, 1);
  assert.equal((sent[0].params as any).settings.codellama.enable, false);
  await controller.toggle();
  await tick();
  assert.equal(item.text, "$(sparkle) m · cpu");
  controller.dispose();
});

test("a settings change is pushed to the server with every server key", async () => {
  const { controller, clients } = makeController();
  await controller.start();
  setUserSetting("codellama.device", "cuda");
  await tick();
  const sent = clients[0].notifications.at(-1)!;
  assert.equal(sent.method, "workspace/didChangeConfiguration");
  const section = (sent.params as any).settings.codellama;
  assert.equal(section.device, "cuda");
  assert.equal(section.maxNewTokens, 128);
  // A client-only key is not pushed.
  const before = clients[0].notifications.length;
  setUserSetting("codellama.train.steps", 3);
  await tick();
  assert.equal(clients[0].notifications.length, before);
  controller.dispose();
});

/** A started controller whose "server", when spawned, dies like a broken install would. */
async function startWithBrokenServer() {
  setUserSetting("codellama.pythonPath", process.execPath);
  const { controller, clients, item } = makeController();
  await controller.start();
  const hooks = clients[0].hooks;
  hooks.command.args.splice(0, hooks.command.args.length, "-e", "console.error(\"ModuleNotFoundError: No module named 'lsp_server'\"); process.exit(1)");
  return { controller, clients, item, hooks };
}

test("a crashing server is restarted with a message, then given up on with the reason", async () => {
  const { controller, clients, item, hooks } = await startWithBrokenServer();
  let restarts = 0;
  for (let i = 0; i < 5; i++) {
    clients[0].notify("codellama/status", { state: "ready" }); // it ran (a restarted server says so first)
    const child = await hooks.spawn();
    await new Promise((r) => child.once("exit", r));
    if (await hooks.onClosed()) restarts++;
  }
  assert.equal(restarts, 4);
  assert.equal(shown.warnings.length, 4);
  assert.match(shown.warnings[0], /stopped \(.*No module named 'lsp_server'.*\)\. Restarting \(1\/4\)/);
  assert.equal(shown.errors.length, 1);
  assert.match(shown.errors[0], /will not be restarted/);
  assert.match(shown.errors[0], /codellama\.pythonPath/);
  assert.match(item.text, /stopped/);
  assert.equal(item.tooltip?.includes("No module named"), true);
  controller.dispose();
});

test("a restart that dies before it runs is reported once, not restarted again", async () => {
  const { controller, clients, item, hooks } = await startWithBrokenServer();
  let child = await hooks.spawn();
  await new Promise((r) => child.once("exit", r));
  assert.equal(await hooks.onClosed(), true, "a server that ran is restarted after a crash");
  assert.equal(shown.warnings.length, 1);
  // The restart's process dies during initialize: the client reports "Restarting server failed".
  child = await hooks.spawn();
  await new Promise((r) => child.once("exit", r));
  assert.equal(await hooks.onClosed(), false, "not restarted again");
  hooks.onTransportError("Restarting server failed");
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(shown.warnings.length, 1);
  assert.equal(shown.errors.length, 1, "one message");
  assert.match(shown.errors[0], /could not start: .*No module named 'lsp_server'/);
  hooks.onTransportError("Restarting server failed");
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(shown.errors.length, 1, "still one message");
  assert.match(item.text, /stopped/);
  controller.dispose();
});

test("a Python that cannot be started is reported, not silently ignored", async () => {
  setUserSetting("codellama.pythonPath", "/nonexistent/bin/python");
  const { controller, item } = makeController(true);
  await controller.start();
  assert.equal(shown.errors.length, 1);
  assert.match(shown.errors[0], /could not start: Could not start `\/nonexistent\/bin\/python -m lsp_server`: \/nonexistent\/bin\/python was not found/);
  assert.match(shown.errors[0], /Check codellama\.pythonPath: .*make install/, "and how to fix it");
  assert.match(item.text, /stopped/);
  controller.dispose();
});
