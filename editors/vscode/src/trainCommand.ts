// Runs `python -m engine train` on the workspace in a cancellable progress notification, then offers to
// use the new adapter (sets codellama.adapter, which makes the server reload the model).
import * as readline from "readline";
import * as vscode from "vscode";
import { ServerController } from "./controller";
import { describeExit, spawnServer } from "./serverProcess";
import { defaultAdapterDir, parseTrainLine, trainCommand } from "./train";

export async function runTrainCommand(controller: ServerController): Promise<void> {
  const folders = vscode.workspace.workspaceFolders ?? [];
  if (folders.length === 0) {
    void vscode.window.showWarningMessage("Code Llama: open a folder to train an adapter on it.");
    return;
  }
  const folder =
    folders.length === 1 ? folders[0] : await vscode.window.showWorkspaceFolderPick({ placeHolder: "Train on which folder?" });
  if (!folder) return;

  const config = vscode.workspace.getConfiguration("codellama");
  const python = controller.resolvedPython?.python ?? controller.resolvePython().python;
  const outDir = defaultAdapterDir(folder.uri.fsPath);
  const cmd = trainCommand({
    python,
    workspace: folder.uri.fsPath,
    outDir,
    model: config.get<string | null>("model"),
    extraArgs: config.get<string[]>("train.extraArgs") ?? [],
  });
  const output = controller.output;
  output.appendLine(`Training: ${[cmd.command, ...cmd.args].join(" ")}`);

  const outcome = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: "Code Llama: training an adapter", cancellable: true },
    (progress, token) =>
      new Promise<{ ok: boolean; cancelled: boolean; message: string }>((resolve) => {
        const proc = spawnServer(cmd, { cwd: folder.uri.fsPath, onStderr: (text) => output.append(text) });
        let reported = 0;
        const onLine = (line: string) => {
          const p = parseTrainLine(line);
          // The notification's bar only moves forward, by increments.
          const increment = p.fraction !== undefined && p.fraction * 100 > reported ? p.fraction * 100 - reported : undefined;
          if (increment !== undefined) reported += increment;
          if (p.message || increment) progress.report({ message: p.message, increment });
        };
        if (proc.child.stdout) {
          readline.createInterface({ input: proc.child.stdout }).on("line", (line) => {
            output.appendLine(line);
            onLine(line);
          });
        }
        if (proc.child.stderr) readline.createInterface({ input: proc.child.stderr }).on("line", onLine);
        let cancelled = false;
        token.onCancellationRequested(() => {
          cancelled = true;
          proc.child.kill("SIGTERM");
          // A training step can take a while to notice; do not leave a stuck process behind.
          setTimeout(() => proc.child.exitCode === null && proc.child.kill("SIGKILL"), 5000);
        });
        proc.child.once("error", (err) => resolve({ ok: false, cancelled, message: describeExit(cmd, null, null, proc.stderr, err) }));
        proc.child.once("exit", (code, signal) =>
          resolve({ ok: code === 0, cancelled, message: describeExit(cmd, code, signal, proc.stderr) }),
        );
      }),
  );

  if (outcome.cancelled) {
    void vscode.window.showInformationMessage("Code Llama: training cancelled.");
  } else if (outcome.ok) {
    const choice = await vscode.window.showInformationMessage(`Code Llama: adapter written to ${outDir}.`, "Use it");
    if (choice === "Use it") await config.update("adapter", outDir, vscode.ConfigurationTarget.Workspace);
  } else {
    const choice = await vscode.window.showErrorMessage(`Code Llama: training failed. ${outcome.message}`, "Show log");
    if (choice === "Show log") output.show(true);
  }
}
