// One time convention for the whole page: the user's choice of UTC (the default) or the browser's local
// time zone, remembered in localStorage. Every time on the page (header, alert feed, chart axis and legend)
// is formatted here, with the date added wherever the instant is not today in the chosen zone.

const ZONE_KEY = "screener.timeZone";
const formatters = new Map(); // zone -> Intl.DateTimeFormat
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

let zone = localStorage.getItem(ZONE_KEY) === "local" ? "local" : "utc";

/** Return the chosen zone: "utc" or "local". */
export function timeZone() {
  return zone;
}

/** Choose "utc" or "local" and remember it for the next visit. */
export function setTimeZone(choice) {
  zone = choice === "local" ? "local" : "utc";
  localStorage.setItem(ZONE_KEY, zone);
}

/** Return the chosen zone's short name: "UTC", or the browser's own (e.g. "GMT+9", "CET"). */
export function zoneLabel() {
  if (zone === "utc") return "UTC";
  const part = new Intl.DateTimeFormat("en-US", { timeZoneName: "short" })
    .formatToParts(new Date())
    .find((p) => p.type === "timeZoneName");
  return part ? part.value : "local";
}

/** Return the chosen zone's full name for tooltips ("UTC" or e.g. "Asia/Tokyo"). */
export function zoneName() {
  return zone === "utc" ? "UTC" : Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
}

function parts(ms) {
  if (!formatters.has(zone)) {
    formatters.set(zone, new Intl.DateTimeFormat("en-GB", {
      timeZone: zone === "utc" ? "UTC" : undefined,
      year: "numeric", month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
    }));
  }
  const out = {};
  for (const p of formatters.get(zone).formatToParts(new Date(ms))) out[p.type] = p.value;
  out.month = MONTHS[Number(out.month) - 1]; // fixed names: ICU spells September "Sep" or "Sept" by version
  out.day = String(Number(out.day));
  return out;
}

/** Return "HH:MM" of ``ms`` (epoch milliseconds) in the chosen zone. */
export function clock(ms) {
  const p = parts(ms);
  return `${p.hour}:${p.minute}`;
}

/** Return "28 Feb" of ``ms`` in the chosen zone, with the year when it is not this year. */
export function day(ms) {
  const p = parts(ms);
  const year = parts(Date.now()).year;
  return p.year === year ? `${p.day} ${p.month}` : `${p.day} ${p.month} ${p.year}`;
}

/** Return whether ``ms`` falls on today's date in the chosen zone. */
export function isToday(ms) {
  const p = parts(ms);
  const now = parts(Date.now());
  return p.year === now.year && p.month === now.month && p.day === now.day;
}

/** Return "HH:MM" for an instant of today, "28 Feb HH:MM" for any other day. */
export function when(ms) {
  return isToday(ms) ? clock(ms) : `${day(ms)} ${clock(ms)}`;
}

// Lightweight Charts' tick mark types (TickMarkType): Year, Month, DayOfMonth, Time, TimeWithSeconds.
const YEAR = 0, MONTH = 1, DAY_OF_MONTH = 2;

/** Return the chart options that make its axis and crosshair follow the chosen zone. */
export function chartTimeOptions() {
  return {
    localization: { timeFormatter: (seconds) => `${day(seconds * 1000)} ${clock(seconds * 1000)} ${zoneLabel()}` },
    timeScale: {
      // Ticks stay on the library's UTC boundaries; a day tick that is not local midnight keeps its time.
      tickMarkFormatter: (seconds, type) => {
        const ms = seconds * 1000;
        const p = parts(ms);
        if (type === YEAR) return p.year;
        if (type === MONTH) return p.month;
        if (type === DAY_OF_MONTH) return clock(ms) === "00:00" ? `${p.day} ${p.month}` : `${p.day} ${p.month} ${clock(ms)}`;
        return clock(ms);
      },
      tickMarkMaxCharacterLength: zone === "utc" ? 8 : 12,
    },
  };
}
