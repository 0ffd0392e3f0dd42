// Owns the language server's lifecycle in VS Code: starting it with the right Python, restarting it
// when it dies (with a readable message), pushing settings, and keeping the status bar current.
//
// It sees the LanguageClient only through `ClientLike`, so tests run it under node with the `vscode`
// module stubbed and a fake client; extension.ts supplies the real vscode-languageclient.
import * as fs from "fs";
import { execFileSync, ChildProcess } from "child_process";
import * as vscode from "vscode";
import { CrashPolicy } from "./crashes";
import { resolvePython, serverCommand, ResolvedPython, ServerCommand, missingPythonHint, missingServerHint } from "./python";
import { describeExit, spawnServer, ServerProcess } from "./serverProcess";
import { affectsServer, affectsServerProcess, initializationOptions, serverSchema, ServerSchema, serverSettings } from "./settings";
import { AskAgainWhenReady, Spot } from "./retry";
import { mergeStatus, ProcessState, renderStatus, ServerStatus } from "./status";

export const STATUS_NOTIFICATION = "codellama/status";
export const GET_STATUS_REQUEST = "codellama/getStatus";
export const SUGGESTION_EVENT = "codellama.suggestionEvent";

/** The subset of vscode-languageclient's LanguageClient the controller uses. */
export interface ClientLike {
  start(): Promise<void>;
  stop(timeoutMs?: number): Promise<void>;
  sendNotification(method: string, params?: unknown): Promise<void>;
  sendRequest<R>(method: string, params?: unknown): Promise<R>;
  onNotification(method: string, handler: (params: any) => void): { dispose(): void };
}

/** What the real client needs from the controller (see extension.ts). */
export interface ClientHooks {
  command: ServerCommand;
  /** Spawns the server; resolves once the process has started (rejects if it cannot). */
  spawn(): Promise<ChildProcess>;
  initializationOptions(): unknown;
  /** The `codellama` section as the server should see it (for `workspace/configuration`). */
  serverSection(): Record<string, unknown>;
  /** Client-side switch: when false, inline completion requests are not even sent. */
  isEnabled(): boolean;
  /** An inline suggestion is being asked for at `spot`. */
  onInlineRequest(spot: Spot): void;
  /** Called when the connection closes; resolves to true when the client should restart the server. */
  onClosed(): Promise<boolean>;
  /** A transport failure the client only logged (the controller shows what the user needs to know). */
  onTransportError(message: string): void;
  outputChannel: vscode.LogOutputChannel;
}

export type ClientFactory = (hooks: ClientHooks) => ClientLike;

export class ServerController implements vscode.Disposable {
  private client: ClientLike | undefined;
  private proc: ServerProcess | undefined;
  private exited: Promise<string> | undefined;
  private python: ResolvedPython | undefined;
  private processState: ProcessState = "starting";
  private failure: string | undefined;
  private server: ServerStatus | undefined;
  private readonly crashes = new CrashPolicy();
  private readonly statusItem: vscode.StatusBarItem;
  private readonly disposables: vscode.Disposable[] = [];
  /** Set while stop() runs, so a deliberate stop is not reported as a crash. */
  private stopping = false;
  /** The server's settings keys, read from this extension's package.json (the one source). */
  readonly schema: ServerSchema;
  /** The API key from secret storage ('Code Llama: Set API key'); wins over the setting. */
  private apiKey: string | undefined;
  private readonly askAgain = new AskAgainWhenReady();

  constructor(
    private readonly extensionPath: string,
    private readonly createClient: ClientFactory,
    readonly output: vscode.LogOutputChannel,
  ) {
    this.schema = serverSchema(JSON.parse(fs.readFileSync(`${extensionPath}/package.json`, "utf8")));
    this.statusItem = vscode.window.createStatusBarItem("codellama.status", vscode.StatusBarAlignment.Right, 100);
    this.statusItem.name = "Code Llama";
    this.statusItem.command = "codellama.toggle";
    this.statusItem.show();
    this.disposables.push(
      this.statusItem,
      vscode.workspace.onDidChangeConfiguration((e) => void this.onConfigurationChanged(e)),
    );
    this.render();
  }

  private config(): vscode.WorkspaceConfiguration {
    return vscode.workspace.getConfiguration("codellama");
  }

  get enabled(): boolean {
    return this.config().get<boolean>("enable") !== false;
  }

  /** The Python resolved for the last start. */
  get resolvedPython(): ResolvedPython | undefined {
    return this.python;
  }

  resolvePython(): ResolvedPython {
    const folders = (vscode.workspace.workspaceFolders ?? []).map((f) => f.uri.fsPath);
    return resolvePython({
      configured: this.config().get<string>("pythonPath"),
      workspaceFolders: folders,
      extensionPath: this.extensionPath,
      platform: process.platform,
      exists: (p) => fs.existsSync(p),
      hasServer: canImportServer,
    });
  }

  async start(): Promise<void> {
    this.python = this.resolvePython();
    const command = serverCommand(this.python.python);
    this.output.appendLine(`Starting ${[command.command, ...command.args].join(" ")} (Python from ${this.python.source})`);
    this.processState = "starting";
    this.failure = undefined;
    this.server = undefined;
    this.render();
    const client = this.createClient(this.hooks(command));
    this.client = client;
    this.disposables.push(client.onNotification(STATUS_NOTIFICATION, (params: ServerStatus) => this.onStatus(params)));
    try {
      await client.start();
    } catch (err) {
      const reason = this.exited ? await withTimeout(this.exited, 2000, errorText(err)) : errorText(err);
      this.fail(reason);
      return;
    }
    if ((this.processState as ProcessState) === "failed") return; // closed during initialize (see onClosed)
    this.processState = "running";
    this.render();
    try {
      this.onStatus(await client.sendRequest<ServerStatus>(GET_STATUS_REQUEST));
    } catch {
      // An older server without codellama/getStatus: the notifications will fill the status in.
    }
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (!client) return;
    this.stopping = true;
    try {
      await client.stop(3000);
    } catch {
      // already dead
    } finally {
      this.proc?.child.kill();
      this.stopping = false;
    }
    this.processState = "stopped";
  }

  async restart(): Promise<void> {
    this.crashes.reset();
    await this.stop();
    await this.start();
  }

  /** Sends a request to the running server (code actions, custom requests). */
  get languageClient(): ClientLike | undefined {
    return this.processState === "running" ? this.client : undefined;
  }

  async toggle(): Promise<void> {
    const config = this.config();
    const inspect = config.inspect<boolean>("enable");
    // Write where the user set it, so a workspace value does not shadow the change.
    const target =
      inspect?.workspaceFolderValue !== undefined
        ? vscode.ConfigurationTarget.WorkspaceFolder
        : inspect?.workspaceValue !== undefined
          ? vscode.ConfigurationTarget.Workspace
          : vscode.ConfigurationTarget.Global;
    await config.update("enable", !this.enabled, target);
    this.render();
  }

  private hooks(command: ServerCommand): ClientHooks {
    return {
      command,
      outputChannel: this.output,
      spawn: () => this.spawn(command),
      initializationOptions: () => initializationOptions(this.config(), this.schema, this.apiKey),
      serverSection: () => this.serverSection(),
      isEnabled: () => this.enabled,
      onInlineRequest: (spot) => this.askAgain.requested(spot, this.server?.state === "ready"),
      onClosed: () => this.onClosed(),
      onTransportError: (message) => void this.onTransportError(message),
    };
  }

  private spawn(command: ServerCommand): Promise<ChildProcess> {
    const cwd = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
    const proc = spawnServer(command, { cwd, onStderr: (text) => this.output.append(text) });
    this.proc = proc;
    this.exited = new Promise<string>((resolve) => {
      proc.child.once("error", (err) => resolve(describeExit(command, null, null, proc.stderr, err)));
      proc.child.once("exit", (code, signal) => resolve(describeExit(command, code, signal, proc.stderr)));
    });
    return new Promise<ChildProcess>((resolve, reject) => {
      proc.child.once("spawn", () => resolve(proc.child));
      proc.child.once("error", (err) => reject(new Error(describeExit(command, null, null, proc.stderr, err))));
    });
  }

  private async onClosed(): Promise<boolean> {
    if (this.stopping) return false;
    const neverRan = this.processState !== "running";
    const reason = this.exited ? await withTimeout(this.exited, 3000, "the connection closed") : "the connection closed";
    if (neverRan) {
      // No Python, no language server in it, a crash on import: restarting would only repeat the
      // failure. One message (the client then resolves start() as if nothing happened).
      this.fail(reason);
      return false;
    }
    const decision = this.crashes.onCrash(reason);
    this.output.appendLine(decision.message);
    if (decision.restart) {
      this.processState = "starting";
      this.server = undefined;
      this.render();
      void vscode.window.showWarningMessage(decision.message);
    } else {
      this.fail(reason, decision.message);
    }
    return decision.restart;
  }

  /** A restart after a crash that could not even start the process: say so, once. (A failed first
   *  start rejects start(), which reports it; a broken connection ends in onClosed.) */
  private async onTransportError(message: string): Promise<void> {
    if (!/^Restarting server failed/.test(message) || this.processState === "failed") return;
    const reason = this.exited ? await withTimeout(this.exited, 2000, message) : message;
    this.fail(reason);
  }

  /** Stops with one message that says why and how to fix it (once per start: the client may report
   *  the same failure on several paths). */
  private fail(reason: string, message?: string): void {
    if (this.processState === "failed") return;
    this.processState = "failed";
    this.failure = reason;
    this.render();
    let text = message ?? `Code Llama language server could not start: ${reason}`;
    if (/does not have the language server installed|No module named/.test(reason) && this.python) {
      text += " " + missingServerHint(this.python);
    } else if (/was not found\.$/.test(reason) && this.python) {
      text += " " + missingPythonHint(this.python);
    }
    this.output.appendLine(text);
    void vscode.window.showErrorMessage(text, "Show log", "Open settings", "Restart").then((choice) => {
      if (choice === "Show log") this.output.show(true);
      else if (choice === "Open settings") void vscode.commands.executeCommand("workbench.action.openSettings", "codellama");
      else if (choice === "Restart") void this.restart();
    });
  }

  onStatus(params: ServerStatus | null | undefined): void {
    if (!params) return;
    const wasReady = this.server?.state === "ready";
    this.server = mergeStatus(this.server, params);
    if (this.processState === "starting" && this.client) this.processState = "running";
    this.render();
    if (!wasReady && this.server.state === "ready") {
      const spot = activeSpot();
      if (this.askAgain.becameReady(spot)) {
        this.output.appendLine(`The model is ready: asking again for the suggestion at ${spot?.line}:${spot?.character}.`);
        void askAgain();
      }
    }
  }

  private async onConfigurationChanged(e: vscode.ConfigurationChangeEvent): Promise<void> {
    const affects = (section: string) => e.affectsConfiguration(section);
    if (affectsServerProcess(affects)) {
      this.output.appendLine("codellama.pythonPath changed: restarting the language server.");
      await this.restart();
      return;
    }
    if (affectsServer(affects, this.schema)) {
      this.render();
      await this.pushSettings();
    }
  }

  /** The `codellama` section as the server gets it. */
  serverSection(): Record<string, unknown> {
    return serverSettings(this.config(), this.schema, this.apiKey);
  }

  private async pushSettings(): Promise<void> {
    const client = this.languageClient;
    if (client) {
      await client.sendNotification("workspace/didChangeConfiguration", { settings: { codellama: this.serverSection() } });
    }
  }

  /** Tells the server what became of its suggestion ("word", "line", "dismissed"): the session's
   *  acceptance statistics (shown in the tooltip, sent nowhere else). A whole accept runs the item's own
   *  command instead. */
  async suggestionEvent(event: "word" | "line" | "dismissed"): Promise<void> {
    try {
      await this.languageClient?.sendRequest("workspace/executeCommand", { command: SUGGESTION_EVENT, arguments: [{ event }] });
    } catch {
      // an older server, or it is restarting: only a count is lost
    }
  }

  /** A new API key from secret storage (undefined: none): the server gets it at once. */
  async setApiKey(apiKey: string | undefined): Promise<void> {
    if ((apiKey || undefined) === this.apiKey) return;
    this.apiKey = apiKey || undefined;
    await this.pushSettings();
  }

  private render(): void {
    const view = renderStatus({ process: this.processState, enabled: this.enabled, server: this.server, failure: this.failure });
    this.statusItem.text = view.text;
    this.statusItem.tooltip = view.tooltip;
    this.statusItem.backgroundColor =
      view.severity === "error"
        ? new vscode.ThemeColor("statusBarItem.errorBackground")
        : view.severity === "warning"
          ? new vscode.ThemeColor("statusBarItem.warningBackground")
          : undefined;
  }

  dispose(): void {
    void this.stop();
    for (const d of this.disposables) d.dispose();
  }
}

/** Does `python -c "import lsp_server"` succeed? (Used to skip a workspace .venv without the server.) */
export function canImportServer(python: string): boolean {
  try {
    execFileSync(python, ["-c", "import lsp_server"], { stdio: "ignore", timeout: 15000, windowsHide: true });
    return true;
  } catch {
    return false;
  }
}

/**
 * Asks VS Code for the inline suggestion at the cursor again (an explicit trigger: VS Code asks the
 * server again after an automatic request at the same place, but keeps an explicit one's answer).
 */
async function askAgain(): Promise<void> {
  await vscode.commands.executeCommand("editor.action.inlineSuggest.trigger");
}

/** Where the cursor of the active editor is (undefined with a selection: nobody waits for a suggestion). */
function activeSpot(): Spot | undefined {
  const editor = vscode.window.activeTextEditor;
  if (!editor || !editor.selection.isEmpty) return undefined;
  const { line, character } = editor.selection.active;
  return { uri: editor.document.uri.toString(), version: editor.document.version, line, character };
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function withTimeout<T>(promise: Promise<T>, ms: number, fallback: T): Promise<T> {
  return new Promise<T>((resolve) => {
    const timer = setTimeout(() => resolve(fallback), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      () => {
        clearTimeout(timer);
        resolve(fallback);
      },
    );
  });
}
