// `Code Llama: Train adapter on workspace`, `Cancel training` and `Drop adapter`: each asks the running
// language server (src/train.ts). Progress, cancel, the report and "Use adapter" come from the server.
import * as vscode from "vscode";
import { ServerController } from "./controller";
import { CANCEL_TRAINING, DROP_ADAPTER, ExecuteCommandParams, trainParams } from "./train";

export async function runTrainCommand(controller: ServerController): Promise<void> {
  const folders = vscode.workspace.workspaceFolders ?? [];
  if (folders.length === 0) {
    void vscode.window.showWarningMessage("Code Llama: open a folder to train an adapter on it.");
    return;
  }
  const folder =
    folders.length === 1 ? folders[0] : await vscode.window.showWorkspaceFolderPick({ placeHolder: "Train on which folder?" });
  if (!folder) return;
  const steps = vscode.workspace.getConfiguration("codellama").get<number | null>("train.steps");
  await execute(controller, trainParams(folder.uri.toString(), steps));
}

export async function cancelTraining(controller: ServerController): Promise<void> {
  await execute(controller, { command: CANCEL_TRAINING });
}

export async function dropAdapter(controller: ServerController): Promise<void> {
  await execute(controller, { command: DROP_ADAPTER });
}

/** The server says what happened (window/showMessage); only a failed request is said here. */
async function execute(controller: ServerController, params: ExecuteCommandParams): Promise<void> {
  const client = controller.languageClient;
  if (!client) {
    void vscode.window.showWarningMessage("Code Llama: the language server is not running.");
    return;
  }
  try {
    await client.sendRequest("workspace/executeCommand", params);
  } catch (err) {
    void vscode.window.showErrorMessage(`Code Llama: ${err instanceof Error ? err.message : String(err)}`);
  }
}
