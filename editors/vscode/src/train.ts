// Training an adapter on the workspace is the language server's job (lsp_server/adapt/commands.py): it
// runs the training in a child process and reports work-done progress, which vscode-languageclient
// shows as a notification with a cancel button; when the run ends the server shows its before/after
// report and asks whether to use the adapter. These are the commands' names and arguments.

/** The server's commands (workspace/executeCommand). Not the names of this extension's own commands:
 *  vscode-languageclient registers each server command under its name as well. */
export const TRAIN_ADAPTER = "codellama.adapter.train";
export const CANCEL_TRAINING = "codellama.adapter.cancelTraining";
export const DROP_ADAPTER = "codellama.adapter.drop";

export interface ExecuteCommandParams {
  command: string;
  arguments?: unknown[];
}

/** Train on `folderUri` (a file URI) with `steps` training steps (null or 0: the run's default budget). */
export function trainParams(folderUri: string, steps: number | null | undefined): ExecuteCommandParams {
  const args: Record<string, unknown> = { workspace: folderUri };
  if (typeof steps === "number" && Number.isInteger(steps) && steps > 0) args.steps = steps;
  return { command: TRAIN_ADAPTER, arguments: [args] };
}
