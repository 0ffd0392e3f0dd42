// Starting the server process and turning its death into a message a user can read.
// No `vscode` import: the stdio test drives this module against the real server under plain node.
import { ChildProcess, spawn } from "child_process";
import { ServerCommand } from "./python";

/** Keeps the last lines a process wrote to stderr (a Python traceback ends with the useful line). */
export class StderrTail {
  private lines: string[] = [];
  private partial = "";

  constructor(private readonly maxLines = 40) {}

  push(chunk: string): void {
    const parts = (this.partial + chunk).split(/\r?\n/);
    this.partial = parts.pop() ?? "";
    this.lines.push(...parts.filter((l) => l.trim() !== ""));
    if (this.lines.length > this.maxLines) this.lines.splice(0, this.lines.length - this.maxLines);
  }

  text(): string {
    return [...this.lines, this.partial].filter((l) => l.trim() !== "").join("\n");
  }

  /** The line that says what went wrong: the last exception line of a traceback, else the last line. */
  reason(): string | undefined {
    const all = [...this.lines, this.partial].filter((l) => l.trim() !== "");
    for (let i = all.length - 1; i >= 0; i--) {
      if (/^[A-Za-z_.]*(Error|Exception|Interrupt|Exit)\b.*:/.test(all[i].trim())) return all[i].trim();
    }
    return all.length ? all[all.length - 1].trim() : undefined;
  }
}

export interface ServerProcess {
  child: ChildProcess;
  stderr: StderrTail;
}

export interface SpawnOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Called with every stderr chunk, e.g. to copy the server's log into an output channel. */
  onStderr?: (text: string) => void;
}

/** Spawns the server with stdin/stdout for JSON-RPC and stderr captured. */
export function spawnServer(cmd: ServerCommand, options: SpawnOptions = {}): ServerProcess {
  const child = spawn(cmd.command, cmd.args, {
    cwd: options.cwd,
    env: { ...process.env, PYTHONUNBUFFERED: "1", ...options.env },
    stdio: ["pipe", "pipe", "pipe"],
    windowsHide: true,
  });
  const stderr = new StderrTail();
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (chunk: string) => {
    stderr.push(chunk);
    options.onStderr?.(chunk);
  });
  return { child, stderr };
}

/** One sentence about why the server stopped, from its exit status and the end of its stderr. */
export function describeExit(
  cmd: ServerCommand,
  code: number | null,
  signal: NodeJS.Signals | null,
  stderr: StderrTail,
  spawnError?: Error,
): string {
  const commandLine = [cmd.command, ...cmd.args].join(" ");
  if (spawnError) {
    const code = (spawnError as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return `Could not start \`${commandLine}\`: ${cmd.command} was not found.`;
    return `Could not start \`${commandLine}\`: ${spawnError.message}`;
  }
  const status = signal ? `was killed by ${signal}` : `exited with code ${code}`;
  const reason = stderr.reason();
  if (reason && /No module named '?lsp_server/.test(reason)) {
    return `\`${commandLine}\` ${status}: ${cmd.command} does not have the language server installed (${reason}).`;
  }
  return reason ? `\`${commandLine}\` ${status}: ${reason}` : `\`${commandLine}\` ${status}.`;
}
