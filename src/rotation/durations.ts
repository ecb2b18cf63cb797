/**
 * ISO 8601 durations (ISO 8601-1:2019 §5.5.2.4, "PnYnMnDTnHnMnS" and "PnW") as used in rotation
 * policies. Calendar parts (years, months, days) and clock parts (hours, minutes, seconds) are kept
 * apart so that adding `P1M` to 31 January lands on the last day of February, not 30 days later.
 * All calendar arithmetic is in UTC: policies are evaluated in UTC so that a schedule never depends
 * on the server's local zone or its daylight-saving rules.
 */
export interface Duration {
  readonly years: number;
  readonly months: number;
  /** Weeks are folded into days (1W = 7D); ISO 8601 forbids mixing W with other parts anyway. */
  readonly days: number;
  /** Hours, minutes and seconds, folded into milliseconds (they are exact, unlike calendar parts). */
  readonly ms: number;
  /** The text the duration was parsed from, for messages and reports. */
  readonly text: string;
}

const DURATION_RE =
  /^P(?:(\d+)W|(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:[.,]\d{1,3})?)S)?)?)$/;

/** Upper bound on any single part: keeps every computation well inside Number's exact range. */
const MAX_PART = 100_000;

const MS_PER_DAY = 86_400_000;

/** Test whether a string is a duration {@link parseDuration} accepts. */
export function isDuration(text: string): boolean {
  return tryParseDuration(text) !== undefined;
}

/** Parse an ISO 8601 duration; returns undefined for anything else (negative, empty, garbage). */
export function tryParseDuration(text: string): Duration | undefined {
  if (typeof text !== 'string' || text === 'P' || text.endsWith('T')) return undefined;
  const m = DURATION_RE.exec(text);
  if (!m) return undefined;
  const [, w, y, mo, d, h, mi, s] = m;
  const int = (v: string | undefined): number => (v === undefined ? 0 : Number(v));
  const parts = [int(w), int(y), int(mo), int(d), int(h), int(mi), s === undefined ? 0 : Number(s.replace(',', '.'))];
  if (parts.some((p) => !Number.isFinite(p) || p > MAX_PART)) return undefined;
  const [weeks, years, months, days, hours, minutes, seconds] = parts as [number, number, number, number, number, number, number];
  return {
    years,
    months,
    days: weeks * 7 + days,
    ms: Math.round(((hours * 60 + minutes) * 60 + seconds) * 1000),
    text,
  };
}

/** Parse an ISO 8601 duration or throw a TypeError naming the text. */
export function parseDuration(text: string): Duration {
  const d = tryParseDuration(text);
  if (!d) throw new TypeError(`not an ISO 8601 duration: ${JSON.stringify(text)}`);
  return d;
}

/** True for P0D, PT0S and the like. */
export function isZeroDuration(d: Duration): boolean {
  return d.years === 0 && d.months === 0 && d.days === 0 && d.ms === 0;
}

function daysInMonthUtc(year: number, month0: number): number {
  return new Date(Date.UTC(year, month0 + 1, 0)).getUTCDate();
}

/**
 * Add `times` × d to an instant with calendar semantics in UTC: years and months move the calendar
 * date and clamp the day of month (31 Jan + P1M = 28/29 Feb), days move the calendar date, and the
 * clock part is exact milliseconds. Multiplying before adding (rather than adding repeatedly)
 * keeps `addDuration(t, P1M, 3)` at the 31st where the month has one.
 */
export function addDurationMs(t: number, d: Duration, times = 1): number {
  if (!Number.isInteger(times) || times < 0) throw new TypeError('times must be a non-negative integer');
  if (times === 0) return t;
  const totalMonths = (d.years * 12 + d.months) * times;
  let out = t;
  if (totalMonths !== 0) {
    const date = new Date(t);
    const y = date.getUTCFullYear();
    const m0 = date.getUTCMonth() + totalMonths;
    const ty = y + Math.floor(m0 / 12);
    const tm = ((m0 % 12) + 12) % 12;
    const day = Math.min(date.getUTCDate(), daysInMonthUtc(ty, tm));
    out = Date.UTC(ty, tm, day, date.getUTCHours(), date.getUTCMinutes(), date.getUTCSeconds(), date.getUTCMilliseconds());
  }
  // UTC has no daylight saving, so a calendar day is always exactly 86 400 000 ms here.
  return out + d.days * times * MS_PER_DAY + d.ms * times;
}

/** Date form of {@link addDurationMs}. */
export function addDuration(t: Date, d: Duration, times = 1): Date {
  return new Date(addDurationMs(t.getTime(), d, times));
}

/**
 * Compare two durations by their length when added to `reference` (default: 1970-01-01, which
 * makes P1M = 31 days). Returns <0, 0 or >0. Calendar durations have no fixed length, so a
 * comparison that matters should name the reference instant it is about.
 */
export function compareDurations(a: Duration, b: Duration, reference = 0): number {
  return addDurationMs(reference, a) - addDurationMs(reference, b);
}

// Fewest and most days in m consecutive calendar months (m = 0…11), over every starting month.
const MIN_DAYS_IN_MONTHS = [0, 28, 59, 89, 120, 150, 181, 212, 242, 273, 303, 334];
const MAX_DAYS_IN_MONTHS = [0, 31, 62, 92, 123, 153, 184, 215, 245, 276, 306, 337];

/**
 * The shortest and longest length a duration can have over every starting instant (a month is 28
 * to 31 days, a year 365 or 366). Static policy checks compare one duration's max with another's
 * min, so that they hold for every period, not just one.
 */
export function durationBoundsMs(d: Duration): { min: number; max: number } {
  const monthsTotal = d.years * 12 + d.months;
  const y = Math.floor(monthsTotal / 12);
  const m = monthsTotal % 12;
  const fixed = d.days * MS_PER_DAY + d.ms;
  // A leap day can fall in the m extra months too, hence the +1 when there are both.
  const maxLeap = y > 0 && m > 0 ? 1 : 0;
  return {
    min: fixed + (y * 365 + MIN_DAYS_IN_MONTHS[m]!) * MS_PER_DAY,
    max: fixed + (y * 366 + MAX_DAYS_IN_MONTHS[m]! + maxLeap) * MS_PER_DAY,
  };
}

/** Approximate length in ms (months = 30.436875 days, the Gregorian mean), for display and sorting only. */
export function approximateDurationMs(d: Duration): number {
  return (d.years * 12 + d.months) * 30.436875 * MS_PER_DAY + d.days * MS_PER_DAY + d.ms;
}
