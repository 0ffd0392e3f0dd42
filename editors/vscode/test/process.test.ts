import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { CrashPolicy } from "../src/crashes";
import { describeExit, spawnServer, StderrTail } from "../src/serverProcess";
import { CANCEL_TRAINING, DROP_ADAPTER, TRAIN_ADAPTER, trainParams } from "../src/train";

test("the stderr tail finds the exception line of a traceback", () => {
  const tail = new StderrTail();
  tail.push("Traceback (most recent call last):\n  File \"<frozen runpy>\", line 189, in _run_module_as_main\n");
  tail.push("ModuleNotFoundError: No module named 'lsp_server'\n");
  assert.equal(tail.reason(), "ModuleNotFoundError: No module named 'lsp_server'");
  const cmd = { command: "/usr/bin/python3", args: ["-m", "lsp_server"] };
  assert.match(describeExit(cmd, 1, null, tail), /does not have the language server installed/);
});

test("a missing interpreter and a crashing server give readable messages", async () => {
  const missing = { command: "/nonexistent/python", args: ["-m", "lsp_server"] };
  const proc = spawnServer(missing);
  const err = await new Promise<Error>((resolve) => proc.child.once("error", resolve));
  assert.equal(describeExit(missing, null, null, proc.stderr, err), "Could not start `/nonexistent/python -m lsp_server`: /nonexistent/python was not found.");

  const crashing = { command: process.execPath, args: ["-e", "console.error('RuntimeError: out of memory'); process.exit(3)"] };
  const p2 = spawnServer(crashing);
  const [code] = await new Promise<[number | null]>((resolve) => p2.child.once("close", (c) => resolve([c])));
  assert.match(describeExit(crashing, code, null, p2.stderr), /exited with code 3: RuntimeError: out of memory$/);
});

test("restarts a few times, then stops and says how to recover", () => {
  const policy = new CrashPolicy(2, 60_000);
  assert.equal(policy.onCrash("x", 0).restart, true);
  assert.match(policy.onCrash("x", 1000).message, /Restarting \(2\/2\)/);
  const third = policy.onCrash("boom", 2000);
  assert.equal(third.restart, false);
  assert.match(third.message, /will not be restarted: boom/);
  // Crashes outside the window are forgotten.
  assert.equal(policy.onCrash("x", 500_000).restart, true);
});

test("training runs in the server: its command, the folder, and the steps only when set", () => {
  assert.deepEqual(trainParams("file:///w", 50), { command: TRAIN_ADAPTER, arguments: [{ workspace: "file:///w", steps: 50 }] });
  assert.deepEqual(trainParams("file:///w", null), { command: TRAIN_ADAPTER, arguments: [{ workspace: "file:///w" }] });
  assert.deepEqual(trainParams("file:///w", 0).arguments, [{ workspace: "file:///w" }]);
  // vscode-languageclient registers server commands under their own names: never one of the extension's.
  const manifest = JSON.parse(fs.readFileSync(path.join(__dirname, "../../package.json"), "utf8"));
  const own = new Set(manifest.contributes.commands.map((c: { command: string }) => c.command));
  for (const command of [TRAIN_ADAPTER, CANCEL_TRAINING, DROP_ADAPTER]) assert.ok(!own.has(command), command);
  assert.ok(own.has("codellama.trainAdapter") && own.has("codellama.cancelTraining") && own.has("codellama.dropAdapter"));
});
