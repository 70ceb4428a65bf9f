/**
 * Inclusive prefix products x_0, x_0 . x_1, ... of any associative `combine` (earlier element first), by
 * Hillis-Steele: log2(n) rounds, each combining every element with the one `offset` before it. Every round
 * reads only the previous one, so its combines are independent: the log-depth form of a scan. It keeps n
 * elements, so it suits tests and small n. The mechanism packages' monoids scan with it.
 */
export function hillisSteele<T>(elements: readonly T[], combine: (earlier: T, later: T) => T): T[] {
  let prev = [...elements];
  for (let offset = 1; offset < prev.length; offset *= 2) {
    const round = prev;
    prev = round.map((e, i) => (i < offset ? e : combine(round[i - offset]!, e)));
  }
  return prev;
}
