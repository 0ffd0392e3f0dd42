import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as path from "path";
import { expandPath, missingServerHint, resolvePython, serverCommand, venvPython } from "../src/python";

const repo = "/home/me/codellama-local";
const ext = path.join(repo, "editors", "vscode");

function resolve(opts: { configured?: string; folders?: string[]; files?: string[]; withServer?: string[]; platform?: NodeJS.Platform }) {
  const files = new Set(opts.files ?? []);
  return resolvePython({
    configured: opts.configured,
    workspaceFolders: opts.folders ?? [],
    extensionPath: ext,
    platform: opts.platform ?? "linux",
    exists: (p) => files.has(p),
    hasServer: (p) => (opts.withServer ?? []).includes(p),
    homeDir: "/home/me",
  });
}

test("the pythonPath setting wins, with ~ and ${workspaceFolder} expanded", () => {
  assert.deepEqual(resolve({ configured: "~/venvs/cl/bin/python", files: [`${repo}/.venv/bin/python`] }), {
    python: "/home/me/venvs/cl/bin/python",
    source: "setting",
  });
  assert.equal(resolve({ configured: "${workspaceFolder}/.venv/bin/python", folders: ["/w"] }).python, "/w/.venv/bin/python");
});

test("a virtual environment folder in pythonPath means its interpreter", () => {
  assert.equal(resolve({ configured: "/opt/venv", files: ["/opt/venv/bin/python"] }).python, "/opt/venv/bin/python");
  assert.equal(
    resolve({ configured: "C:\\venv", files: [path.join("C:\\venv", "Scripts", "python.exe")], platform: "win32" }).python,
    path.join("C:\\venv", "Scripts", "python.exe"),
  );
});

test("a workspace .venv is used only when it has the server installed", () => {
  const files = ["/w/.venv/bin/python", `${repo}/.venv/bin/python`, `${repo}/lsp_server`];
  assert.deepEqual(resolve({ folders: ["/w"], files, withServer: ["/w/.venv/bin/python"] }), {
    python: "/w/.venv/bin/python",
    source: "workspace .venv",
  });
  assert.deepEqual(resolve({ folders: ["/w"], files, withServer: [] }), { python: `${repo}/.venv/bin/python`, source: "repository .venv" });
});

test("falls back to python3 on PATH", () => {
  assert.deepEqual(resolve({ folders: ["/w"] }), { python: "python3", source: "PATH" });
  assert.equal(resolve({ platform: "win32" }).python, "python");
});

test("the server command is python -m lsp_server", () => {
  assert.deepEqual(serverCommand("/x/python"), { command: "/x/python", args: ["-m", "lsp_server"] });
  assert.equal(venvPython("/v", "linux"), "/v/bin/python");
  assert.equal(expandPath("~", undefined, "/home/me"), "/home/me");
});

test("the missing-server hint names the Python and the fix", () => {
  const hint = missingServerHint({ python: "/usr/bin/python3", source: "PATH" });
  assert.match(hint, /\/usr\/bin\/python3/);
  assert.match(hint, /codellama\.pythonPath/);
});
