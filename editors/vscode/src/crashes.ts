// When to restart a server that died: restart it a few times, then stop and say why, so that a server
// which cannot start (wrong Python, broken install) does not restart forever.

export interface CrashDecision {
  restart: boolean;
  /** What to show the user. */
  message: string;
}

export class CrashPolicy {
  private crashes: number[] = [];

  constructor(
    private readonly maxRestarts = 4,
    private readonly windowMs = 3 * 60 * 1000,
  ) {}

  /** Records a crash at `now` (ms) and decides whether to restart. `reason` is one readable sentence. */
  onCrash(reason: string, now = Date.now()): CrashDecision {
    this.crashes = this.crashes.filter((t) => now - t < this.windowMs);
    this.crashes.push(now);
    const n = this.crashes.length;
    if (n <= this.maxRestarts) {
      return { restart: true, message: `Code Llama language server stopped (${reason}). Restarting (${n}/${this.maxRestarts})…` };
    }
    const minutes = Math.round(this.windowMs / 60000);
    return {
      restart: false,
      message:
        `Code Llama language server stopped ${n} times in ${minutes} minutes and will not be restarted: ${reason} ` +
        "Fix the cause (see 'Code Llama: Show server log'), then run 'Code Llama: Restart language server'.",
    };
  }

  /** Forget past crashes (after a manual restart or a settings change). */
  reset(): void {
    this.crashes = [];
  }
}
