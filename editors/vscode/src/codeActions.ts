// `Code Llama: Ask Code Llama about the selection…`: lists the server's code actions (its instruct
// queries) for the selection in a quick pick and applies the chosen one. The same actions also appear
// in VS Code's light bulb, through the language client.
import * as vscode from "vscode";
import { ServerController } from "./controller";

interface LspPosition {
  line: number;
  character: number;
}
interface LspRange {
  start: LspPosition;
  end: LspPosition;
}
interface LspTextEdit {
  range: LspRange;
  newText: string;
}
interface LspWorkspaceEdit {
  changes?: Record<string, LspTextEdit[]>;
  documentChanges?: Array<{ textDocument?: { uri: string }; edits?: LspTextEdit[] }>;
}
interface LspCommand {
  title: string;
  command: string;
  arguments?: unknown[];
}
interface LspCodeAction {
  title: string;
  kind?: string;
  edit?: LspWorkspaceEdit;
  command?: LspCommand | string;
  data?: unknown;
  disabled?: { reason: string };
}

const toRange = (r: LspRange) => new vscode.Range(r.start.line, r.start.character, r.end.line, r.end.character);

/** LSP workspace edit (JSON) to a vscode.WorkspaceEdit: text edits only, which is what the server sends. */
export function toWorkspaceEdit(edit: LspWorkspaceEdit): vscode.WorkspaceEdit {
  const out = new vscode.WorkspaceEdit();
  for (const [uri, edits] of Object.entries(edit.changes ?? {})) {
    for (const e of edits) out.replace(vscode.Uri.parse(uri), toRange(e.range), e.newText);
  }
  for (const change of edit.documentChanges ?? []) {
    if (!change.textDocument || !change.edits) continue;
    for (const e of change.edits) out.replace(vscode.Uri.parse(change.textDocument.uri), toRange(e.range), e.newText);
  }
  return out;
}

function isCommand(item: LspCodeAction | LspCommand): item is LspCommand {
  return typeof (item as LspCommand).command === "string" && (item as LspCodeAction).edit === undefined && !("kind" in item);
}

/** Arguments for `workspace/executeCommand`: the server's "Ask" action needs the user's question, which
 * only the editor can ask for; everything else passes unchanged. Undefined when the user gave none. */
export async function withQuestion(
  command: string,
  args: unknown[] | undefined,
  askUser: () => Thenable<string | undefined>,
): Promise<unknown[] | undefined> {
  const first = (args ?? [])[0] as { action?: string; question?: string } | undefined;
  if (command !== "codellama.runAction" || first?.action !== "ask" || first.question) return args;
  const question = (await askUser())?.trim();
  return question ? [{ ...first, question }, ...(args ?? []).slice(1)] : undefined;
}

export const askQuestion = () => vscode.window.showInputBox({ prompt: "Ask Code Llama about this code", ignoreFocusOut: true });

export async function runCodeActionCommand(controller: ServerController): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  const client = controller.languageClient;
  if (!editor) return;
  if (!client) {
    void vscode.window.showWarningMessage("Code Llama: the language server is not running.");
    return;
  }
  const sel = editor.selection;
  const params = {
    textDocument: { uri: editor.document.uri.toString() },
    range: { start: { line: sel.start.line, character: sel.start.character }, end: { line: sel.end.line, character: sel.end.character } },
    context: { diagnostics: [], triggerKind: 1 },
  };
  const result = (await client.sendRequest<Array<LspCodeAction | LspCommand> | null>("textDocument/codeAction", params)) ?? [];
  if (result.length === 0) {
    void vscode.window.showInformationMessage("Code Llama has no actions for this selection.");
    return;
  }
  // Actions the model cannot serve are listed too, with the server's reason (as the light bulb greys them out).
  const picked = await vscode.window.showQuickPick(
    result.map((action) => {
      const reason = (action as LspCodeAction).disabled?.reason;
      return reason
        ? { label: `$(circle-slash) ${action.title}`, description: "unavailable", detail: reason, action }
        : { label: action.title, action };
    }),
    { placeHolder: "Ask Code Llama…", matchOnDetail: false },
  );
  const reason = picked && (picked.action as LspCodeAction).disabled?.reason;
  if (reason) {
    void vscode.window.showWarningMessage(`${picked.action.title}: ${reason}`);
    return;
  }
  if (!picked) return;
  await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: picked.action.title },
    async () => {
      let action = picked.action;
      if (isCommand(action)) {
        await client.sendRequest("workspace/executeCommand", { command: action.command, arguments: action.arguments });
        return;
      }
      if (!action.edit && !action.command && action.data !== undefined) {
        action = await client.sendRequest<LspCodeAction>("codeAction/resolve", action);
      }
      if (action.edit) await vscode.workspace.applyEdit(toWorkspaceEdit(action.edit));
      const command = action.command;
      if (command && typeof command !== "string") {
        const args = await withQuestion(command.command, command.arguments, askQuestion);
        if (args) await client.sendRequest("workspace/executeCommand", { command: command.command, arguments: args });
      }
    },
  );
}
