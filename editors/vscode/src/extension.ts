// Entry point: builds the LanguageClient (vscode-languageclient over stdio) and registers commands.
//
// Inline suggestions come from the client's built-in LSP 3.18 inline completion feature, so VS Code's
// own commands work on them: Tab accepts, Ctrl+Right accepts a word, Alt+] / Alt+[ switch suggestions,
// Esc dismisses; this extension adds a key for "accept line", and binds Ctrl+Right, Ctrl+Alt+Right and
// Esc to the same commands followed by a note to the server for the session's acceptance counts (if
// another extension's suggestion is showing, it is counted too).
import * as vscode from "vscode";
import {
  CloseAction,
  ErrorAction,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
} from "vscode-languageclient/node";
import { askQuestion, runCodeActionCommand, withQuestion } from "./codeActions";
import { ClientHooks, ClientLike, ServerController } from "./controller";
import { API_KEY_SECRET } from "./settings";
import { cancelTraining, dropAdapter, runTrainCommand } from "./trainCommand";

let controller: ServerController | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  // A log channel: vscode-languageclient writes its own log and the LSP trace (codellama.trace.server) here.
  const output = vscode.window.createOutputChannel("Code Llama", { log: true });
  controller = new ServerController(context.extensionPath, createLanguageClient, output);
  const ctl = controller;
  context.subscriptions.push(
    output,
    ctl,
    vscode.commands.registerCommand("codellama.toggle", () => ctl.toggle()),
    vscode.commands.registerCommand("codellama.restartServer", () => ctl.restart()),
    vscode.commands.registerCommand("codellama.showOutput", () => output.show(true)),
    vscode.commands.registerCommand("codellama.codeAction", () => runCodeActionCommand(ctl)),
    vscode.commands.registerCommand("codellama.trainAdapter", () => runTrainCommand(ctl)),
    vscode.commands.registerCommand("codellama.cancelTraining", () => cancelTraining(ctl)),
    vscode.commands.registerCommand("codellama.dropAdapter", () => dropAdapter(ctl)),
    vscode.commands.registerCommand("codellama.setApiKey", () => setApiKey(context.secrets)),
    // VS Code's own accept-word/line and hide, bound to the same keys while a suggestion shows, and
    // counted for the session's statistics (a whole accept runs the item's command, counted by the server).
    vscode.commands.registerCommand("codellama.acceptWord", () => withEvent("editor.action.inlineSuggest.acceptNextWord", "word")),
    vscode.commands.registerCommand("codellama.acceptLine", () => withEvent("editor.action.inlineSuggest.acceptNextLine", "line")),
    vscode.commands.registerCommand("codellama.dismiss", () => withEvent("editor.action.inlineSuggest.hide", "dismissed")),
    // Set from this window or another one: the server gets the new key either way.
    context.secrets.onDidChange(async (e) => {
      if (e.key === API_KEY_SECRET) await ctl.setApiKey(await context.secrets.get(API_KEY_SECRET));
    }),
  );
  await ctl.setApiKey(await context.secrets.get(API_KEY_SECRET));
  await ctl.start();

  async function withEvent(command: string, event: "word" | "line" | "dismissed"): Promise<void> {
    await vscode.commands.executeCommand(command);
    await ctl.suggestionEvent(event);
  }
}

/** 'Code Llama: Set API key': kept in VS Code's secret storage, never written to settings.json. */
async function setApiKey(secrets: vscode.SecretStorage): Promise<void> {
  const key = await vscode.window.showInputBox({
    title: "Code Llama: API key for the remote backend",
    prompt: "Sent as 'Authorization: Bearer' to the codellama.backend host only. Kept in VS Code's secret storage. Empty: remove the stored key.",
    password: true,
    ignoreFocusOut: true,
  });
  if (key === undefined) return; // cancelled
  if (key.trim()) await secrets.store(API_KEY_SECRET, key.trim());
  else await secrets.delete(API_KEY_SECRET);
  void vscode.window.showInformationMessage(key.trim() ? "Code Llama: API key stored." : "Code Llama: stored API key removed.");
}

export async function deactivate(): Promise<void> {
  await controller?.stop();
  controller = undefined;
}

/** The real client: stdio transport through our own spawn, crash handling and settings middleware. */
export function createLanguageClient(hooks: ClientHooks): ClientLike {
  const serverOptions: ServerOptions = () => hooks.spawn();
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
    outputChannel: hooks.outputChannel,
    initializationOptions: () => hooks.initializationOptions(),
    // Without this handler the client would show the failed initialize's raw error in a toast.
    initializationFailedHandler: () => false,
    errorHandler: {
      // Logged, never a toast: a write to a dead server (EPIPE) is followed by `closed`, where the
      // controller says once, readably, what happened.
      error: (_error, _message, count) => ({
        action: (count ?? 0) <= 3 ? ErrorAction.Continue : ErrorAction.Shutdown,
        handled: true,
      }),
      closed: async () => ({
        action: (await hooks.onClosed()) ? CloseAction.Restart : CloseAction.DoNotRestart,
        handled: true, // the controller has shown its own message
      }),
    },
    middleware: {
      // Code actions chosen from the light bulb run through here: "Ask" gets its question first.
      executeCommand: async (command, args, next) => {
        const withArgs = await withQuestion(command, args, askQuestion);
        return withArgs ? next(command, withArgs) : undefined;
      },
      provideInlineCompletionItems: (document, position, context, token, next) => {
        if (!hooks.isEnabled()) return null;
        hooks.onInlineRequest({ uri: document.uri.toString(), version: document.version, line: position.line, character: position.character });
        return next(document, position, context, token);
      },
      workspace: {
        // The server pulls section `codellama`: answer it with the server keys only (pythonPath and
        // the other client-side settings stay here), other sections as VS Code would.
        configuration: async (params, token, next) => {
          if (!params.items.some((item) => item.section === "codellama")) return next(params, token);
          const others = params.items.filter((item) => item.section !== "codellama");
          const answered = others.length ? await next({ items: others }, token) : [];
          if (answered instanceof Error) return answered;
          let k = 0;
          return params.items.map((item) => (item.section === "codellama" ? hooks.serverSection() : answered[k++]));
        },
      },
    },
  };
  return new CodeLlamaClient(serverOptions, clientOptions, hooks);
}

/**
 * vscode-languageclient shows its own toasts for transport failures ("couldn't create connection to
 * server", "connection to server is erroring. write EPIPE"), beside the controller's one message that
 * says what happened and how to fix it. Those go to the log only, and the controller hears of them.
 */
class CodeLlamaClient extends LanguageClient {
  constructor(serverOptions: ServerOptions, clientOptions: LanguageClientOptions, private readonly hooks: ClientHooks) {
    super("codellama", "Code Llama", serverOptions, clientOptions);
  }

  override error(message: string, data?: unknown, showNotification: boolean | "force" = true): void {
    const transport = showNotification === "force" || message === "Server initialization failed.";
    if (!transport) return super.error(message, data, showNotification);
    super.error(message, data, false);
    this.hooks.onTransportError(message);
  }
}
