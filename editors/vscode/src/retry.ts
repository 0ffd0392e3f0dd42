// Nothing lost while the model loads: an inline suggestion asked for before the server's model was
// ready is answered with nothing. When the model becomes ready, the extension asks again, once, if the
// user still waits where they asked (same document version, same cursor). Pure: the controller wires it.

/** Where a suggestion was asked for. */
export interface Spot {
  uri: string;
  version: number;
  line: number;
  character: number;
}

export class AskAgainWhenReady {
  private waiting: Spot | undefined;

  /** A suggestion is asked for at `spot`; `ready`: the server's model is loaded. */
  requested(spot: Spot, ready: boolean): void {
    this.waiting = ready ? undefined : spot;
  }

  /** The model became ready; `current` is where the user is now. True: ask again there (only once). */
  becameReady(current: Spot | undefined): boolean {
    const asked = this.waiting;
    this.waiting = undefined;
    return asked !== undefined && current !== undefined && sameSpot(asked, current);
  }
}

export function sameSpot(a: Spot, b: Spot): boolean {
  return a.uri === b.uri && a.version === b.version && a.line === b.line && a.character === b.character;
}
