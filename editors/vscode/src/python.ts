// Which Python runs the language server. Kept free of the `vscode` module so tests run under node.
import * as os from "os";
import * as path from "path";

export type PythonSource = "setting" | "workspace .venv" | "repository .venv" | "PATH";

export interface ResolvedPython {
  python: string;
  source: PythonSource;
}

export interface ResolveInput {
  /** `codellama.pythonPath`, possibly empty. */
  configured: string | undefined;
  /** Absolute paths of the open workspace folders. */
  workspaceFolders: readonly string[];
  /** Where the extension lives; when run from this repository, `<repo>/editors/vscode`. */
  extensionPath: string;
  platform: NodeJS.Platform;
  exists: (file: string) => boolean;
  /** Can this Python import the server? Checked for discovered interpreters only, not for the setting. */
  hasServer: (python: string) => boolean;
  homeDir?: string;
}

/** The interpreter inside a virtual environment folder. */
export function venvPython(venvDir: string, platform: NodeJS.Platform): string {
  return platform === "win32" ? path.join(venvDir, "Scripts", "python.exe") : path.join(venvDir, "bin", "python");
}

/** Expands `~` and `${workspaceFolder}` the way users write paths in settings.json. */
export function expandPath(value: string, workspaceFolder: string | undefined, homeDir = os.homedir()): string {
  let out = value.trim();
  if (workspaceFolder) out = out.split("${workspaceFolder}").join(workspaceFolder);
  if (out === "~") out = homeDir;
  else if (out.startsWith("~/") || out.startsWith("~\\")) out = path.join(homeDir, out.slice(2));
  return out;
}

/**
 * Resolution order: the `codellama.pythonPath` setting (an interpreter or a venv folder); the `.venv`
 * of a workspace folder that has the server installed; the `.venv` of the repository this extension
 * was built from (`<repo>/editors/vscode` → `<repo>/.venv`); `python3` (`python` on Windows) on PATH.
 */
export function resolvePython(input: ResolveInput): ResolvedPython {
  const { platform, exists } = input;
  const configured = (input.configured ?? "").trim();
  if (configured) {
    const expanded = expandPath(configured, input.workspaceFolders[0], input.homeDir);
    // A venv folder rather than an interpreter: use the interpreter inside it.
    const inside = venvPython(expanded, platform);
    return { python: exists(inside) ? inside : expanded, source: "setting" };
  }
  for (const folder of input.workspaceFolders) {
    const candidate = venvPython(path.join(folder, ".venv"), platform);
    if (exists(candidate) && input.hasServer(candidate)) return { python: candidate, source: "workspace .venv" };
  }
  const repoRoot = path.resolve(input.extensionPath, "..", "..");
  const repoPython = venvPython(path.join(repoRoot, ".venv"), platform);
  if (exists(repoPython) && exists(path.join(repoRoot, "lsp_server"))) {
    return { python: repoPython, source: "repository .venv" };
  }
  return { python: platform === "win32" ? "python" : "python3", source: "PATH" };
}

export interface ServerCommand {
  command: string;
  args: string[];
}

/** The server's command line: `python -m lsp_server` on stdio. */
export function serverCommand(python: string, extraArgs: readonly string[] = []): ServerCommand {
  return { command: python, args: ["-m", "lsp_server", ...extraArgs] };
}

/** What to tell the user when the chosen Python does not exist. */
export function missingPythonHint(resolved: ResolvedPython): string {
  const where = resolved.source === "setting" ? "codellama.pythonPath" : `the Python found on ${resolved.source}`;
  return (
    `Check ${where}: it must name a Python (or a virtual environment folder) with the language server, ` +
    "e.g. the .venv that `make install` creates in the codellama-local repository."
  );
}

/** What to tell the user when the server cannot be imported by the chosen Python. */
export function missingServerHint(resolved: ResolvedPython): string {
  const where =
    resolved.source === "setting"
      ? `the Python set in codellama.pythonPath (${resolved.python})`
      : `${resolved.python} (found on ${resolved.source})`;
  return (
    `The Code Llama language server is not installed for ${where}. ` +
    "Run `make install` in the codellama-local repository and set codellama.pythonPath to its .venv."
  );
}
