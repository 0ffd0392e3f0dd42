// `Code Llama: Train adapter on workspace`: the command line, and reading progress from its output.
// Pure functions; extension.ts runs the process inside a cancellable progress notification.
import * as path from "path";
import { ServerCommand } from "./python";

export interface TrainOptions {
  python: string;
  workspace: string;
  /** Where the adapter is written. */
  outDir: string;
  /** `codellama.model` (null/empty: the default model). */
  model?: string | null;
  extraArgs?: readonly string[];
}

/** A folder name for a new adapter, under the workspace's `.codellama/adapters/`. */
export function defaultAdapterDir(workspace: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, "").replace(/\..*$/, "").replace("T", "-");
  return path.join(workspace, ".codellama", "adapters", stamp);
}

export function trainCommand(options: TrainOptions): ServerCommand {
  const args = ["-m", "engine", "train", "--data", options.workspace, "--out", options.outDir];
  if (options.model) args.push("--model", options.model);
  args.push(...(options.extraArgs ?? []));
  return { command: options.python, args };
}

export interface TrainProgress {
  /** 0..1 when the line says how far training got. */
  fraction?: number;
  /** A short line for the notification. */
  message?: string;
}

/**
 * Progress from one output line. Understands JSON lines with `step` and `total`/`total_steps`/`steps`
 * (or `progress` 0..1), "step 12/300"-style text and percentages; other lines become the message.
 */
export function parseTrainLine(line: string): TrainProgress {
  const text = line.trim();
  if (!text) return {};
  if (text.startsWith("{")) {
    try {
      const obj = JSON.parse(text) as Record<string, unknown>;
      const step = num(obj.step);
      const total = num(obj.total) ?? num(obj.total_steps) ?? num(obj.totalSteps) ?? num(obj.steps) ?? num(obj.max_steps);
      let fraction = num(obj.progress);
      if (fraction === undefined && step !== undefined && total) fraction = step / total;
      const parts: string[] = [];
      if (step !== undefined) parts.push(total ? `step ${step}/${total}` : `step ${step}`);
      const loss = num(obj.loss);
      if (loss !== undefined) parts.push(`loss ${loss.toFixed(3)}`);
      const message = typeof obj.message === "string" ? obj.message : typeof obj.event === "string" ? obj.event : undefined;
      if (message) parts.push(message);
      return { fraction: clamp(fraction), message: parts.join(", ") || undefined };
    } catch {
      // not JSON after all: fall through to text
    }
  }
  const steps = /\bstep\s+(\d+)\s*\/\s*(\d+)/i.exec(text) ?? /\b(\d+)\s*\/\s*(\d+)\b/.exec(text);
  if (steps && Number(steps[2]) > 0) return { fraction: clamp(Number(steps[1]) / Number(steps[2])), message: text };
  const percent = /(\d+(?:\.\d+)?)\s*%/.exec(text);
  if (percent) return { fraction: clamp(Number(percent[1]) / 100), message: text };
  return { message: text };
}

function num(value: unknown): number | undefined {
  return typeof value === "number" && Number.isFinite(value) ? value : undefined;
}

function clamp(value: number | undefined): number | undefined {
  return value === undefined ? undefined : Math.min(1, Math.max(0, value));
}
