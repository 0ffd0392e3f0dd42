// The question step of Code Llama's "Ask" code action, with the `vscode` module stubbed.
import { installVscodeStub } from "./vscodeStub";
installVscodeStub();

import { test } from "node:test";
import * as assert from "node:assert/strict";
// Loaded after the stub is installed (it imports "vscode").
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { withQuestion } = require("../src/codeActions") as typeof import("../src/codeActions");

const ask = { action: "ask", uri: "file:///w/a.py", range: { start: { line: 1, character: 0 }, end: { line: 2, character: 0 } } };

test("Ask gets the user's question before it reaches the server", async () => {
  const args = await withQuestion("codellama.runAction", [ask], async () => "  why pi?  ");
  assert.deepEqual(args, [{ ...ask, question: "why pi?" }]);
});

test("Ask is not sent when the user gives no question", async () => {
  assert.equal(await withQuestion("codellama.runAction", [ask], async () => undefined), undefined);
  assert.equal(await withQuestion("codellama.runAction", [ask], async () => "   "), undefined);
});

test("other actions and commands pass unchanged, without prompting", async () => {
  const prompt = async () => assert.fail("must not prompt");
  const explain = [{ ...ask, action: "explain" }];
  assert.equal(await withQuestion("codellama.runAction", explain, prompt), explain);
  const asked = [{ ...ask, question: "already asked" }];
  assert.equal(await withQuestion("codellama.runAction", asked, prompt), asked);
  assert.equal(await withQuestion("codellama.reloadModel", undefined, prompt), undefined);
});
