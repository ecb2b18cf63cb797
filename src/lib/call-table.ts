/**
 * Calls in flight to a worker thread, by call number: what a Map<number, T> would do for a
 * table whose entries come and go at every call, without making the garbage collector promote
 * every call.
 *
 * Why not a Map: V8 replaces a Map's hash table whenever deleted entries fill it, and leaves in
 * the old table a link to the new one (and, as the measurements below suggest, the entries it
 * held). Once one of those tables has been promoted to the old generation, the scavenger takes
 * what it points to as alive (an old object is not checked for liveness by a young collection):
 * the next table, and through the stale entries each call's promise, the request awaiting it and
 * everything that request holds. All of it is promoted in turn, and only a full collection frees
 * it. Measured on the signing path (bench/run.ts, `BENCH_ONLY=sign-open`, 10,500 signatures/s on
 * two processes, `--trace-gc`): the old generation of a server process grew 6.2 MB/s with a Map
 * of calls in flight, and 3.2 and 3.5 MB/s (two runs) without it, so that a full collection,
 * whose marking and final pause make the worst event-loop stalls there, came about every 20 s
 * instead of every 10 s.
 *
 * This table is open addressing with linear probing over two arrays that are allocated once (and
 * again only when it must grow): a slot is emptied when its call is taken, so nothing is left
 * pointing at a finished call. Call numbers are positive safe integers, and each is in the table
 * at most once.
 */
export class CallTable<T> {
  #ids: Float64Array;
  #items: (T | undefined)[];
  #size = 0;

  constructor(capacity = 16) {
    let n = 8;
    while (n < capacity * 2) n *= 2;
    this.#ids = new Float64Array(n);
    this.#items = new Array<T | undefined>(n).fill(undefined);
  }

  /** Calls in flight. */
  get size(): number {
    return this.#size;
  }

  /** Adds call `id`. @throws RangeError for an id that is not a positive safe integer, or one already in the table */
  add(id: number, item: T): void {
    if (!Number.isSafeInteger(id) || id <= 0) throw new RangeError('a call number is a positive safe integer');
    if ((this.#size + 1) * 2 > this.#ids.length) this.#grow();
    const ids = this.#ids;
    const mask = ids.length - 1;
    let i = id % ids.length;
    while (ids[i] !== 0) {
      if (ids[i] === id) throw new RangeError(`call ${id} is already in flight`);
      i = (i + 1) & mask;
    }
    ids[i] = id;
    this.#items[i] = item;
    this.#size++;
  }

  /** Removes call `id` and returns what it was added with; undefined when it is not in flight. */
  take(id: number): T | undefined {
    const ids = this.#ids;
    const mask = ids.length - 1;
    let i = id % ids.length;
    if (!(i >= 0)) return undefined; // not a number
    while (ids[i] !== 0) {
      if (ids[i] === id) {
        const item = this.#items[i];
        this.#removeAt(i);
        return item;
      }
      i = (i + 1) & mask;
    }
    return undefined;
  }

  /** Removes every call; returns them as [id, item] pairs, in no particular order. */
  drain(): [number, T][] {
    const out: [number, T][] = [];
    const ids = this.#ids;
    for (let i = 0; i < ids.length; i++) {
      if (ids[i] === 0) continue;
      out.push([ids[i]!, this.#items[i] as T]);
      ids[i] = 0;
      this.#items[i] = undefined;
    }
    this.#size = 0;
    return out;
  }

  /**
   * Empties slot `i` and moves back the entries after it that probing would no longer find
   * (deletion in linear probing without tombstones).
   */
  #removeAt(i: number): void {
    const ids = this.#ids;
    const items = this.#items;
    const mask = ids.length - 1;
    ids[i] = 0;
    items[i] = undefined;
    this.#size--;
    let hole = i;
    for (let j = (i + 1) & mask; ids[j] !== 0; j = (j + 1) & mask) {
      const home = ids[j]! % ids.length;
      // The entry at j stays when its home slot lies cyclically in (hole, j]: probing from home
      // reaches j without crossing the hole.
      const stays = hole <= j ? hole < home && home <= j : hole < home || home <= j;
      if (stays) continue;
      ids[hole] = ids[j]!;
      items[hole] = items[j];
      ids[j] = 0;
      items[j] = undefined;
      hole = j;
    }
  }

  #grow(): void {
    const entries = this.drain();
    const n = this.#ids.length * 2;
    this.#ids = new Float64Array(n);
    this.#items = new Array<T | undefined>(n).fill(undefined);
    for (const [id, item] of entries) this.add(id, item);
  }
}
