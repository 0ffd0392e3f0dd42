// A small stand-in for the `vscode` module (VS Code itself cannot run here): just what the extension's
// controller, status bar and commands touch, recording what they show so tests can assert on it.
// `installVscodeStub()` must run before any module that imports "vscode" is loaded.
import * as fs from "fs";
import * as path from "path";
import Module = require("module");

type Listener<T> = (e: T) => unknown;

export class EventEmitter<T> {
  private listeners: Listener<T>[] = [];
  event = (listener: Listener<T>) => {
    this.listeners.push(listener);
    return { dispose: () => (this.listeners = this.listeners.filter((l) => l !== listener)) };
  };
  fire(e: T): void {
    for (const l of [...this.listeners]) l(e);
  }
}

export class ThemeColor {
  constructor(readonly id: string) {}
}

export class Position {
  constructor(
    readonly line: number,
    readonly character: number,
  ) {}
}

export class Range {
  readonly start: Position;
  readonly end: Position;
  constructor(a: number, b: number, c: number, d: number) {
    this.start = new Position(a, b);
    this.end = new Position(c, d);
  }
}

export class Uri {
  private constructor(readonly fsPath: string) {}
  static file(p: string): Uri {
    return new Uri(p);
  }
  static parse(s: string): Uri {
    return new Uri(s.replace(/^file:\/\//, ""));
  }
  toString(): string {
    return `file://${this.fsPath}`;
  }
}

export class WorkspaceEdit {
  readonly edits: Array<{ uri: Uri; range: Range; text: string }> = [];
  replace(uri: Uri, range: Range, text: string): void {
    this.edits.push({ uri, range, text });
  }
}

export const StatusBarAlignment = { Left: 1, Right: 2 };
export const ConfigurationTarget = { Global: 1, Workspace: 2, WorkspaceFolder: 3 };
export const ProgressLocation = { SourceControl: 1, Window: 10, Notification: 15 };

/** Everything the extension showed, for assertions. */
export const shown = {
  warnings: [] as string[],
  errors: [] as string[],
  infos: [] as string[],
  commands: [] as Array<{ command: string; args: unknown[] }>,
  reset(): void {
    this.warnings.length = 0;
    this.errors.length = 0;
    this.infos.length = 0;
    this.commands.length = 0;
  },
};

export interface FakeStatusBarItem {
  id: string;
  text: string;
  tooltip: string | undefined;
  name?: string;
  command?: string;
  backgroundColor?: ThemeColor;
  visible: boolean;
  show(): void;
  hide(): void;
  dispose(): void;
}
export const statusItems: FakeStatusBarItem[] = [];

/** Contributed defaults come from the real package.json, as VS Code would read them. */
const manifest = JSON.parse(fs.readFileSync(path.join(__dirname, "..", "..", "package.json"), "utf8"));
const defaults: Record<string, unknown> = {};
for (const [key, spec] of Object.entries<{ default?: unknown }>(manifest.contributes.configuration.properties)) {
  defaults[key] = spec.default;
}

/** User settings (full keys, e.g. "codellama.model"), and a change event like VS Code's. */
export const userSettings = new Map<string, unknown>();
const configChanged = new EventEmitter<{ affectsConfiguration(section: string): boolean }>();

export function setUserSetting(key: string, value: unknown): void {
  if (value === undefined) userSettings.delete(key);
  else userSettings.set(key, value);
  configChanged.fire({ affectsConfiguration: (section: string) => key === section || key.startsWith(section + ".") });
}

function getConfiguration(section?: string) {
  const full = (key: string) => (section ? `${section}.${key}` : key);
  return {
    get<T>(key: string, fallback?: T): T | undefined {
      const k = full(key);
      if (userSettings.has(k)) return userSettings.get(k) as T;
      if (k in defaults) return defaults[k] as T;
      return fallback;
    },
    has(key: string): boolean {
      return userSettings.has(full(key)) || full(key) in defaults;
    },
    inspect<T>(key: string) {
      const k = full(key);
      return { key: k, defaultValue: defaults[k] as T, globalValue: userSettings.get(k) as T | undefined };
    },
    update(key: string, value: unknown): Promise<void> {
      setUserSetting(full(key), value);
      return Promise.resolve();
    },
  };
}

export const workspace = {
  workspaceFolders: undefined as Array<{ uri: Uri; name: string; index: number }> | undefined,
  getConfiguration,
  onDidChangeConfiguration: configChanged.event,
  applyEdit: async (_edit: WorkspaceEdit) => true,
};

export const window = {
  createStatusBarItem(id: string): FakeStatusBarItem {
    const item: FakeStatusBarItem = {
      id,
      text: "",
      tooltip: undefined,
      visible: false,
      show() {
        this.visible = true;
      },
      hide() {
        this.visible = false;
      },
      dispose() {
        this.visible = false;
      },
    };
    statusItems.push(item);
    return item;
  },
  createOutputChannel(name: string) {
    const lines: string[] = [];
    return {
      name,
      lines,
      append: (text: string) => lines.push(text),
      appendLine: (text: string) => lines.push(text + "\n"),
      show: () => undefined,
      dispose: () => undefined,
    };
  },
  showWarningMessage: async (message: string) => {
    shown.warnings.push(message);
    return undefined;
  },
  showErrorMessage: async (message: string) => {
    shown.errors.push(message);
    return undefined;
  },
  showInformationMessage: async (message: string) => {
    shown.infos.push(message);
    return undefined;
  },
  activeTextEditor: undefined,
};

export const commands = {
  executeCommand: async (command: string, ...args: unknown[]) => {
    shown.commands.push({ command, args });
    return undefined;
  },
  registerCommand: (_command: string, _callback: (...args: unknown[]) => unknown) => ({ dispose: () => undefined }),
};

let installed = false;

/** Makes `require("vscode")` return this module. */
export function installVscodeStub(): void {
  if (installed) return;
  installed = true;
  const mod = Module as unknown as { _resolveFilename: (request: string, ...rest: unknown[]) => string };
  const original = mod._resolveFilename;
  mod._resolveFilename = function (request: string, ...rest: unknown[]) {
    if (request === "vscode") return __filename;
    return original.call(this, request, ...rest);
  };
}
