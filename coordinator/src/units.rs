//! Units of the command line and of the placement model: sizes, distances,
//! distance ranges, durations, redundancy schemes, geographic points and the
//! great-circle distance between them.
//!
//! This module owns parsing (`FromStr`) and formatting (`Display`) of the
//! texts users type (`20GiB`, `50km`, `100km..800km`, `24h`, `erasure:4+2`)
//! and the validation of their values. It must not know about nodes,
//! placement or storage: it only turns text into checked numbers and back.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use geo::{Distance, Haversine, Point};
use serde::{Deserialize, Serialize};

/// Timestamps everywhere in the coordinator: unix time in milliseconds,
/// always passed in by the caller (the library never reads a clock).
pub type Millis = u64;

/// Mean Earth radius used for every great-circle distance, in km (IUGG / GRS80 mean radius).
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Kilometres in one international mile.
pub const KM_PER_MILE: f64 = 1.609_344;

/// A value that does not parse or is out of range; each variant names the offending text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UnitError {
    #[error("{0:?} is not a size: use bytes or a number with a unit, e.g. 500MB, 20GiB, 4MiB")]
    BadSize(String),
    #[error("{0:?} is too large a size (more than 2^64 bytes)")]
    SizeTooLarge(String),
    #[error("{0:?} is not a distance: use a number with km or mi, e.g. 50km, 30mi")]
    BadDistance(String),
    #[error(
        "{0:?} is not a distance range: use MIN..MAX with either side optional, e.g. 100km.., ..800km, 10mi..500mi"
    )]
    BadRange(String),
    #[error("distance range {0:?}: the minimum is larger than the maximum")]
    RangeInverted(String),
    #[error(
        "{0:?} is not a duration: use a number with ms, s, m, h, d or w, e.g. 500ms, 90s, 15m, 24h, 2w"
    )]
    BadDuration(String),
    #[error(
        "{0:?} is not a redundancy: use erasure:K+M (e.g. erasure:4+2) or replicas:N (e.g. replicas:3)"
    )]
    BadRedundancy(String),
    #[error(
        "redundancy {0:?} is out of range: erasure needs K >= 1, M >= 1 and K+M <= 255; replicas needs 1 <= N <= 255"
    )]
    RedundancyOutOfRange(String),
    #[error("{0:?} is not a location: use LAT,LON in degrees, e.g. 48.85,2.35")]
    BadLocation(String),
    #[error(
        "location ({lat}, {lon}) is out of range: latitude must be in [-90, 90], longitude in [-180, 180]"
    )]
    LocationOutOfRange { lat: f64, lon: f64 },
}

// ---------------------------------------------------------------- sizes

const SIZE_UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("pb", 1_000_000_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("pib", 1 << 50),
    ("k", 1_000),
    ("m", 1_000_000),
    ("g", 1_000_000_000),
    ("t", 1_000_000_000_000),
];

/// Splits `12.5GiB` into (`12.5`, `GiB`).
fn split_number(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    (&text[..end], text[end..].trim())
}

/// Parses a decimal number without sign or exponent (`12`, `0.5`, `12.`).
fn parse_plain_number(num: &str) -> Option<f64> {
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return None;
    }
    num.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Parses a size: bare bytes (`4096`) or a number with a decimal (`500MB`)
/// or binary (`20GiB`) unit, case-insensitive. Fractions are allowed with a
/// unit (`1.5GiB`) and rounded down to whole bytes.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let bad = || UnitError::BadSize(text.to_string());
    let trimmed = text.trim();
    let (num, unit) = split_number(trimmed);
    if unit.is_empty() {
        return num.parse::<u64>().map_err(|_| {
            if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) {
                UnitError::SizeTooLarge(text.to_string())
            } else {
                bad()
            }
        });
    }
    let unit = unit.to_ascii_lowercase();
    let factor = SIZE_UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, f)| *f)
        .ok_or_else(bad)?;
    if let Ok(whole) = num.parse::<u64>() {
        return whole
            .checked_mul(factor)
            .ok_or_else(|| UnitError::SizeTooLarge(text.to_string()));
    }
    let value = parse_plain_number(num).ok_or_else(bad)?;
    let bytes = value * factor as f64;
    if bytes >= u64::MAX as f64 {
        return Err(UnitError::SizeTooLarge(text.to_string()));
    }
    Ok(bytes as u64)
}

/// Formats a size with the largest binary unit that keeps it readable
/// (`4096` → `4KiB`, `1536` → `1.50KiB`, `10` → `10B`). The output parses back
/// with [`parse_size`] to the same value when it is a whole number of units.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut unit = 0;
    let mut scaled = bytes as f64;
    while scaled >= 1024.0 && unit + 1 < UNITS.len() {
        scaled /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes}B");
    }
    let whole = 1u64 << (10 * unit);
    if bytes.is_multiple_of(whole) {
        format!("{}{}", bytes / whole, UNITS[unit])
    } else {
        format!("{scaled:.2}{}", UNITS[unit])
    }
}

// ------------------------------------------------------------ distances

/// Parses a distance with a unit (`50km`, `30mi`, `0.5km`) into km.
/// A bare number is refused: the unit is never guessed.
pub fn parse_distance_km(text: &str) -> Result<f64, UnitError> {
    let bad = || UnitError::BadDistance(text.to_string());
    let (num, unit) = split_number(text.trim());
    let value = parse_plain_number(num).ok_or_else(bad)?;
    let km = match unit.to_ascii_lowercase().as_str() {
        "km" => value,
        "mi" => value * KM_PER_MILE,
        "m" => value / 1000.0,
        _ => return Err(bad()),
    };
    Ok(km)
}

/// Formats km for display and round trips (`200km`, `12.5km`).
pub fn format_km(km: f64) -> String {
    // Rounded to 0.1 km: `300mi` is `482.8km`, not `482.80320000000006km`.
    let r = (km * 10.0).round() / 10.0;
    if r.fract() == 0.0 && r.abs() < 1e15 {
        format!("{}km", r as i64)
    } else if r.is_finite() {
        format!("{r:.1}km")
    } else {
        format!("{km}km")
    }
}

/// A great-circle distance constraint: `min_km <= d <= max_km`, each bound optional.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DistanceRange {
    pub min_km: Option<f64>,
    pub max_km: Option<f64>,
}

impl DistanceRange {
    /// No constraint at all (`..`).
    pub const ANY: DistanceRange = DistanceRange {
        min_km: None,
        max_km: None,
    };

    /// A range with both bounds given in km; checks it like the parser does.
    pub fn km(min_km: Option<f64>, max_km: Option<f64>) -> Result<Self, UnitError> {
        let range = DistanceRange { min_km, max_km };
        range.validate()?;
        Ok(range)
    }

    /// Bounds are finite, non-negative and not inverted.
    pub fn validate(&self) -> Result<(), UnitError> {
        for bound in [self.min_km, self.max_km].into_iter().flatten() {
            if !bound.is_finite() || bound < 0.0 {
                return Err(UnitError::BadRange(self.to_string()));
            }
        }
        if let (Some(lo), Some(hi)) = (self.min_km, self.max_km)
            && lo > hi
        {
            return Err(UnitError::RangeInverted(self.to_string()));
        }
        Ok(())
    }

    /// Whether a distance in km satisfies both bounds (inclusive).
    pub fn contains(&self, km: f64) -> bool {
        self.min_km.is_none_or(|lo| km >= lo) && self.max_km.is_none_or(|hi| km <= hi)
    }

    /// The lower bound, 0 when omitted.
    pub fn min_or_zero(&self) -> f64 {
        self.min_km.unwrap_or(0.0)
    }

    /// Whether neither bound is set.
    pub fn is_unbounded(&self) -> bool {
        self.min_km.is_none() && self.max_km.is_none()
    }
}

impl fmt::Display for DistanceRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(lo) = self.min_km {
            f.write_str(&format_km(lo))?;
        }
        f.write_str("..")?;
        if let Some(hi) = self.max_km {
            f.write_str(&format_km(hi))?;
        }
        Ok(())
    }
}

impl FromStr for DistanceRange {
    type Err = UnitError;
    /// `MIN..MAX`, either side optional: `100km..`, `..800km`, `10mi..500mi`, `..`.
    /// A bare value without `..` is refused: say `50km..50km` to mean exactly.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let (lo, hi) = trimmed
            .split_once("..")
            .ok_or_else(|| UnitError::BadRange(text.to_string()))?;
        let side = |s: &str| -> Result<Option<f64>, UnitError> {
            let s = s.trim();
            if s.is_empty() {
                Ok(None)
            } else {
                parse_distance_km(s)
                    .map(Some)
                    .map_err(|_| UnitError::BadRange(text.to_string()))
            }
        };
        let range = DistanceRange {
            min_km: side(lo)?,
            max_km: side(hi)?,
        };
        if let (Some(a), Some(b)) = (range.min_km, range.max_km)
            && a > b
        {
            return Err(UnitError::RangeInverted(text.to_string()));
        }
        range.validate()?;
        Ok(range)
    }
}

// ------------------------------------------------------------ durations

/// A unix time in milliseconds as `2026-11-30 17:05:09 UTC` (civil date
/// from days since the epoch, proleptic Gregorian calendar).
pub fn format_unix_ms(ms: Millis) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, on unsigned days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Parses a duration: a whole number with `ms`, `s`, `m`, `h`, `d` or `w`
/// (`500ms`, `90s`, `15m`, `24h`, `365d`, `2w`).
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let bad = || UnitError::BadDuration(text.to_string());
    let (num, unit) = split_number(text.trim());
    let value: u64 = num.parse().map_err(|_| bad())?;
    if unit.eq_ignore_ascii_case("ms") {
        return Ok(Duration::from_millis(value));
    }
    let secs_per = match unit.to_ascii_lowercase().as_str() {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    value
        .checked_mul(secs_per)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

/// Formats a duration in the largest unit that divides it (`2w`, `24h` → `1d`, `90s`).
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    for (unit, per) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs > 0 && secs.is_multiple_of(per) {
            return format!("{}{unit}", secs / per);
        }
    }
    format!("{secs}s")
}

// ----------------------------------------------------------- redundancy

/// How packets are made redundant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Redundancy {
    /// Reed–Solomon: `k` data packets and `m` parity packets per stripe; any `k` rebuild it.
    Erasure { k: u8, m: u8 },
    /// Every packet stored `n` times; a stripe is one packet and its copies.
    Replicas { n: u8 },
}

impl Default for Redundancy {
    /// The spec's default: erasure 4+2.
    fn default() -> Self {
        Redundancy::Erasure { k: 4, m: 2 }
    }
}

impl Redundancy {
    /// Checks the bounds the parser enforces (for values built in code or decoded).
    pub fn validate(&self) -> Result<(), UnitError> {
        let ok = match *self {
            Redundancy::Erasure { k, m } => k >= 1 && m >= 1 && (k as u16 + m as u16) <= 255,
            Redundancy::Replicas { n } => n >= 1,
        };
        if ok {
            Ok(())
        } else {
            Err(UnitError::RedundancyOutOfRange(self.to_string()))
        }
    }

    /// Packets per stripe, all on distinct targets (K+M, or N).
    pub fn width(&self) -> usize {
        match *self {
            Redundancy::Erasure { k, m } => k as usize + m as usize,
            Redundancy::Replicas { n } => n as usize,
        }
    }

    /// Data packets per stripe (K, or 1 for replicas).
    pub fn data_packets(&self) -> usize {
        match *self {
            Redundancy::Erasure { k, .. } => k as usize,
            Redundancy::Replicas { .. } => 1,
        }
    }

    /// Packets of one stripe that may be lost with the stripe still recoverable (M, or N-1).
    pub fn tolerated_losses(&self) -> usize {
        self.width() - self.data_packets()
    }

    /// Stored bytes per byte of data: (K+M)/K, or N.
    pub fn overhead(&self) -> f64 {
        self.width() as f64 / self.data_packets() as f64
    }
}

impl fmt::Display for Redundancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Redundancy::Erasure { k, m } => write!(f, "erasure:{k}+{m}"),
            Redundancy::Replicas { n } => write!(f, "replicas:{n}"),
        }
    }
}

impl FromStr for Redundancy {
    type Err = UnitError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || UnitError::BadRedundancy(text.to_string());
        let out_of_range = || UnitError::RedundancyOutOfRange(text.to_string());
        let (scheme, params) = text.trim().split_once(':').ok_or_else(bad)?;
        // Parse as u16 first so that 300 reads as "out of range", not "garbage".
        let number = |s: &str| -> Result<u16, UnitError> {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse::<u16>().map_err(|_| out_of_range())
        };
        let redundancy = match scheme.trim().to_ascii_lowercase().as_str() {
            "erasure" => {
                let (k, m) = params.split_once('+').ok_or_else(bad)?;
                let (k, m) = (number(k)?, number(m)?);
                if k == 0 || m == 0 || k + m > 255 {
                    return Err(out_of_range());
                }
                Redundancy::Erasure {
                    k: k as u8,
                    m: m as u8,
                }
            }
            "replicas" => {
                let n = number(params)?;
                if n == 0 || n > 255 {
                    return Err(out_of_range());
                }
                Redundancy::Replicas { n: n as u8 }
            }
            _ => return Err(bad()),
        };
        Ok(redundancy)
    }
}

// ------------------------------------------------------------- geography

/// A declared location in degrees (WGS84 latitude and longitude).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
}

impl GeoPoint {
    /// A checked point: finite, latitude in [-90, 90], longitude in [-180, 180].
    pub fn new(lat: f64, lon: f64) -> Result<Self, UnitError> {
        let point = GeoPoint { lat, lon };
        point.validate()?;
        Ok(point)
    }

    /// Checks the ranges (for points decoded from the network or disk).
    pub fn validate(&self) -> Result<(), UnitError> {
        let ok = self.lat.is_finite()
            && self.lon.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon);
        if ok {
            Ok(())
        } else {
            Err(UnitError::LocationOutOfRange {
                lat: self.lat,
                lon: self.lon,
            })
        }
    }

    /// The point on the unit sphere (x, y, z), used by the spatial index.
    pub fn unit_vector(&self) -> [f64; 3] {
        let (lat, lon) = (self.lat.to_radians(), self.lon.to_radians());
        [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
    }
}

impl fmt::Display for GeoPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.lat, self.lon)
    }
}

impl FromStr for GeoPoint {
    type Err = UnitError;
    /// `LAT,LON` in degrees, e.g. `48.8566,2.3522`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || UnitError::BadLocation(text.to_string());
        let (lat, lon) = text.trim().split_once(',').ok_or_else(bad)?;
        let lat: f64 = lat.trim().parse().map_err(|_| bad())?;
        let lon: f64 = lon.trim().parse().map_err(|_| bad())?;
        GeoPoint::new(lat, lon)
    }
}

/// Great-circle distance in km (haversine, mean Earth radius 6371.0088 km).
pub fn haversine_km(a: &GeoPoint, b: &GeoPoint) -> f64 {
    Haversine.distance(Point::new(a.lon, a.lat), Point::new(b.lon, b.lat)) / 1000.0
}

/// Straight-line (chord) distance on the unit sphere for a great-circle distance in km.
/// Monotonic in the distance, so a ball query of this radius in the index
/// contains exactly the points within `km` (up to rounding).
pub fn chord_for_km(km: f64) -> f64 {
    let angle = (km / EARTH_RADIUS_KM).clamp(0.0, std::f64::consts::PI);
    2.0 * (angle / 2.0).sin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_decimal_binary_and_bare_bytes() {
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size(" 7 kb "), Ok(7000));
        assert!(matches!(parse_size("lots"), Err(UnitError::BadSize(t)) if t == "lots"));
        assert!(matches!(parse_size("5XB"), Err(UnitError::BadSize(_))));
        assert!(matches!(parse_size("-5MB"), Err(UnitError::BadSize(_))));
        assert!(matches!(
            parse_size("99999999999PiB"),
            Err(UnitError::SizeTooLarge(_))
        ));
    }

    #[test]
    fn sizes_format_and_round_trip() {
        for bytes in [0, 10, 1024, 4 << 20, 20 << 30, 3 << 40] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes), "{bytes}");
        }
        assert_eq!(format_size(1536), "1.50KiB");
    }

    #[test]
    fn distances_parse_km_and_miles_and_refuse_bare_numbers() {
        assert_eq!(parse_distance_km("50km"), Ok(50.0));
        let mi = parse_distance_km("30mi").unwrap();
        assert!((mi - 48.28032).abs() < 1e-9);
        assert!(matches!(
            parse_distance_km("50"),
            Err(UnitError::BadDistance(_))
        ));
        assert!(parse_distance_km("km").is_err());
    }

    #[test]
    fn ranges_accept_open_sides_and_refuse_bare_values() {
        let r: DistanceRange = "100km..".parse().unwrap();
        assert_eq!(r, DistanceRange::km(Some(100.0), None).unwrap());
        let r: DistanceRange = "..800km".parse().unwrap();
        assert_eq!(r.max_km, Some(800.0));
        assert_eq!(r.min_km, None);
        let r: DistanceRange = "10mi..500mi".parse().unwrap();
        assert!((r.min_km.unwrap() - 16.09344).abs() < 1e-9);
        assert_eq!("..".parse::<DistanceRange>(), Ok(DistanceRange::ANY));
        assert!(matches!(
            "50km".parse::<DistanceRange>(),
            Err(UnitError::BadRange(t)) if t == "50km"
        ));
        assert!(matches!(
            "900km..100km".parse::<DistanceRange>(),
            Err(UnitError::RangeInverted(_))
        ));
        assert!("1x..2km".parse::<DistanceRange>().is_err());
        let r: DistanceRange = "200km..2000km".parse().unwrap();
        assert_eq!(r.to_string(), "200km..2000km");
        assert_eq!(r.to_string().parse::<DistanceRange>(), Ok(r));
        assert!(r.contains(200.0) && r.contains(2000.0) && !r.contains(2000.1));
    }

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(format_unix_ms(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_unix_ms(1_796_051_109_000), "2026-11-30 15:05:09 UTC");
        assert_eq!(format_unix_ms(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(
            parse_duration("365d"),
            Ok(Duration::from_secs(365 * 86_400))
        );
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert!(matches!(parse_duration("2y"), Err(UnitError::BadDuration(t)) if t == "2y"));
        assert!(parse_duration("1.5h").is_err());
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        for text in ["2w", "3d", "5h", "7m", "61s"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    #[test]
    fn redundancy_parses_with_bounds_and_reports_its_shape() {
        let r: Redundancy = "erasure:10+4".parse().unwrap();
        assert_eq!(r, Redundancy::Erasure { k: 10, m: 4 });
        assert_eq!(
            (r.width(), r.data_packets(), r.tolerated_losses()),
            (14, 10, 4)
        );
        assert!((r.overhead() - 1.4).abs() < 1e-12);
        assert_eq!(r.to_string(), "erasure:10+4");
        let r: Redundancy = "replicas:3".parse().unwrap();
        assert_eq!(
            (r.width(), r.data_packets(), r.tolerated_losses()),
            (3, 1, 2)
        );
        assert_eq!(r.overhead(), 3.0);
        assert!(matches!(
            "erasure:200+100".parse::<Redundancy>(),
            Err(UnitError::RedundancyOutOfRange(_))
        ));
        assert!(matches!(
            "erasure:4+0".parse::<Redundancy>(),
            Err(UnitError::RedundancyOutOfRange(_))
        ));
        assert!(matches!(
            "replicas:0".parse::<Redundancy>(),
            Err(UnitError::RedundancyOutOfRange(_))
        ));
        assert!(matches!(
            "raid5".parse::<Redundancy>(),
            Err(UnitError::BadRedundancy(_))
        ));
        assert!(matches!(
            "erasure:4-2".parse::<Redundancy>(),
            Err(UnitError::BadRedundancy(_))
        ));
    }

    #[test]
    fn geo_points_validate_and_measure_great_circles() {
        assert!(GeoPoint::new(91.0, 0.0).is_err());
        assert!(GeoPoint::new(0.0, f64::NAN).is_err());
        assert!("48.8566,2.3522".parse::<GeoPoint>().is_ok());
        assert!(matches!(
            "paris".parse::<GeoPoint>(),
            Err(UnitError::BadLocation(_))
        ));
        let paris = GeoPoint::new(48.8566, 2.3522).unwrap();
        let london = GeoPoint::new(51.5074, -0.1278).unwrap();
        let d = haversine_km(&paris, &london);
        assert!((d - 343.5).abs() < 1.0, "{d}");
        let antipode = GeoPoint::new(-48.8566, -177.6478).unwrap();
        let half = std::f64::consts::PI * EARTH_RADIUS_KM;
        assert!((haversine_km(&paris, &antipode) - half).abs() < 1e-6);
        // The chord is monotonic and matches the unit vectors' distance.
        let (a, b) = (paris.unit_vector(), london.unit_vector());
        let chord = ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt();
        assert!((chord - chord_for_km(d)).abs() < 1e-12);
    }
}
