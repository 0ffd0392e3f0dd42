import { test } from "node:test";
import * as assert from "node:assert/strict";
import { CrashPolicy } from "../src/crashes";
import { describeExit, spawnServer, StderrTail } from "../src/serverProcess";
import { defaultAdapterDir, parseTrainLine, trainCommand } from "../src/train";

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

test("train command line and progress parsing", () => {
  const cmd = trainCommand({ python: "/v/bin/python", workspace: "/w", outDir: "/w/.codellama/adapters/a", model: "/m", extraArgs: ["--steps", "50"] });
  assert.deepEqual(cmd.args, ["-m", "engine", "train", "--data", "/w", "--out", "/w/.codellama/adapters/a", "--model", "/m", "--steps", "50"]);
  assert.deepEqual(parseTrainLine('{"step": 25, "total_steps": 100, "loss": 1.23456}'), { fraction: 0.25, message: "step 25/100, loss 1.235" });
  assert.equal(parseTrainLine("step 3/12 loss 2.0").fraction, 0.25);
  assert.equal(parseTrainLine("tokenizing 40%").fraction, 0.4);
  assert.deepEqual(parseTrainLine("loading model"), { message: "loading model" });
  assert.match(defaultAdapterDir("/w", new Date("2025-01-02T03:04:05Z")), /\/w\/\.codellama\/adapters\/20250102-030405$/);
});
