//! The embedded world city table and population-weighted location sampling.
//!
//! Owns `data/cities.csv` (compiled into the binary), its parsing into a
//! [`CityTable`] (once, lazily, for the embedded copy), and drawing node
//! locations from it: a city chosen with probability proportional to its
//! population, optionally moved by a random offset of up to `jitter_km`.
//! Randomness always comes from the caller's RNG, so a seed reproduces the
//! same locations. This module must not do distance constraints or placement
//! (see the placement module) and must not read files at run time.
//!
//! City data: GeoNames (<https://www.geonames.org/>), licensed under
//! Creative Commons Attribution 4.0 (CC BY 4.0). The table keeps the columns
//! `geonameid,name,country,latitude,longitude,population`.

use std::sync::OnceLock;

use rand_core::Rng;
use serde::Deserialize;

/// The city table shipped with strew (GeoNames, CC BY 4.0).
const EMBEDDED_CSV: &str = include_str!("../../data/cities.csv");

/// Mean Earth radius in km (IUGG), the same radius the distance rules use.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Errors reading a city table.
#[derive(Debug, thiserror::Error)]
pub enum CityError {
    /// A row could not be read as `geonameid,name,country,latitude,longitude,population`.
    #[error("city table row {row}: not geonameid,name,country,latitude,longitude,population")]
    Malformed {
        row: u64,
        #[source]
        source: csv::Error,
    },
    /// A coordinate lies outside the valid range.
    #[error("city table row {row}: coordinates ({lat}, {lon}) are out of range")]
    BadCoordinates { row: u64, lat: f64, lon: f64 },
    /// No city has a population above zero, so nothing can be sampled.
    #[error("city table has no city with a population above zero")]
    NoPopulation,
}

/// One city of the table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct City {
    pub geonameid: u64,
    pub name: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
    #[serde(rename = "latitude")]
    pub lat: f64,
    #[serde(rename = "longitude")]
    pub lon: f64,
    pub population: u64,
}

/// A parsed city table with a cumulative population index for weighted sampling.
#[derive(Debug, Clone)]
pub struct CityTable {
    cities: Vec<City>,
    /// `cumulative[i]` = total population of cities `0..=i`.
    cumulative: Vec<u64>,
}

impl CityTable {
    /// The table compiled into strew, parsed on first use.
    pub fn embedded() -> Result<&'static CityTable, &'static CityError> {
        static TABLE: OnceLock<Result<CityTable, CityError>> = OnceLock::new();
        TABLE
            .get_or_init(|| CityTable::parse(EMBEDDED_CSV))
            .as_ref()
    }

    /// Parses CSV text with the header `geonameid,name,country,latitude,longitude,population`
    /// (quoted fields allowed; further columns are ignored).
    pub fn parse(text: &str) -> Result<CityTable, CityError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(text.as_bytes());
        let mut cities = Vec::new();
        let mut cumulative = Vec::new();
        let mut total: u64 = 0;
        for (index, record) in reader.deserialize::<City>().enumerate() {
            let row = index as u64 + 2; // 1-based, after the header line
            let city = record.map_err(|source| CityError::Malformed { row, source })?;
            if !(-90.0..=90.0).contains(&city.lat) || !(-180.0..=180.0).contains(&city.lon) {
                return Err(CityError::BadCoordinates {
                    row,
                    lat: city.lat,
                    lon: city.lon,
                });
            }
            total = total.saturating_add(city.population);
            cumulative.push(total);
            cities.push(city);
        }
        if total == 0 {
            return Err(CityError::NoPopulation);
        }
        Ok(CityTable { cities, cumulative })
    }

    /// The cities for which `keep` is true (e.g. a region), or `None` if they
    /// have no population between them.
    pub fn filtered(&self, keep: impl Fn(&City) -> bool) -> Option<CityTable> {
        let mut cities = Vec::new();
        let mut cumulative = Vec::new();
        let mut total: u64 = 0;
        for city in self.cities.iter().filter(|c| keep(c)) {
            total = total.saturating_add(city.population);
            cumulative.push(total);
            cities.push(city.clone());
        }
        (total > 0).then_some(CityTable { cities, cumulative })
    }

    /// All cities, in file order.
    pub fn cities(&self) -> &[City] {
        &self.cities
    }

    /// Number of cities.
    pub fn len(&self) -> usize {
        self.cities.len()
    }

    /// Whether the table is empty (never true for a table that parsed).
    pub fn is_empty(&self) -> bool {
        self.cities.is_empty()
    }

    /// A name for `(lat, lon)`: the most populous city within 25 km (so the
    /// middle of Paris is "Paris", not one of its districts), else the
    /// closest within `within_km`; and its distance. For `peers`, plans and
    /// maps. A linear scan (about 34k cities).
    pub fn nearest(&self, lat: f64, lon: f64, within_km: f64) -> Option<(&City, f64)> {
        let here = crate::units::GeoPoint::new(lat, lon).ok()?;
        let near: Vec<(&City, f64)> = self
            .cities
            .iter()
            .filter_map(|c| {
                let there = crate::units::GeoPoint::new(c.lat, c.lon).ok()?;
                Some((c, crate::units::haversine_km(&here, &there)))
            })
            .filter(|(_, d)| *d <= within_km)
            .collect();
        near.iter()
            .filter(|(_, d)| *d <= 25.0)
            .max_by_key(|(c, _)| c.population)
            .or_else(|| near.iter().min_by(|a, b| a.1.total_cmp(&b.1)))
            .copied()
    }

    /// Sum of all populations.
    pub fn total_population(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// A city drawn with probability proportional to its population.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> &City {
        let total = self.total_population();
        // Lemire-style widening multiply: uniform in 0..total without modulo bias worth noting.
        let pick = ((u128::from(rng.next_u64()) * u128::from(total)) >> 64) as u64;
        let index = self.cumulative.partition_point(|&c| c <= pick);
        // `pick < total`, so some cumulative value exceeds it and `index` is in range.
        &self.cities[index.min(self.cities.len() - 1)]
    }

    /// A location `(lat, lon)` in degrees: a population-weighted city moved by a
    /// random offset uniform over the disc of radius `jitter_km` around it
    /// (no offset when `jitter_km` is 0 or negative).
    pub fn sample_location<R: Rng + ?Sized>(&self, rng: &mut R, jitter_km: f64) -> (f64, f64) {
        let city = self.sample(rng);
        jitter(city.lat, city.lon, jitter_km, rng)
    }
}

/// A uniform float in `[0, 1)` from the top 53 bits of a `u64`.
fn unit_f64<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Moves `(lat, lon)` by a random offset uniform over the disc of radius `radius_km`
/// (great-circle destination point), returning the new `(lat, lon)` in degrees.
pub fn jitter<R: Rng + ?Sized>(lat: f64, lon: f64, radius_km: f64, rng: &mut R) -> (f64, f64) {
    if radius_km <= 0.0 || !radius_km.is_finite() {
        return (lat, lon);
    }
    let distance_km = radius_km * unit_f64(rng).sqrt();
    let bearing = unit_f64(rng) * std::f64::consts::TAU;
    destination(lat, lon, distance_km, bearing)
}

/// The point `distance_km` away from `(lat, lon)` along the initial `bearing` (radians).
pub fn destination(lat: f64, lon: f64, distance_km: f64, bearing: f64) -> (f64, f64) {
    let delta = distance_km / EARTH_RADIUS_KM;
    let phi1 = lat.to_radians();
    let lambda1 = lon.to_radians();
    let sin_phi2 = phi1.sin() * delta.cos() + phi1.cos() * delta.sin() * bearing.cos();
    let phi2 = sin_phi2.clamp(-1.0, 1.0).asin();
    let lambda2 = lambda1
        + (bearing.sin() * delta.sin() * phi1.cos()).atan2(delta.cos() - phi1.sin() * sin_phi2);
    let lon2 = (lambda2.to_degrees() + 540.0).rem_euclid(360.0) - 180.0;
    (phi2.to_degrees(), lon2)
}

#[cfg(test)]
mod tests {
    use super::*;

    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    fn rng(seed: u64) -> Xoshiro256PlusPlus {
        Xoshiro256PlusPlus::seed_from_u64(seed)
    }

    #[test]
    fn nearest_names_the_closest_city_within_range() {
        let table = CityTable::embedded().expect("embedded table");
        let (city, d) = table.nearest(48.86, 2.35, 50.0).expect("Paris is near");
        assert_eq!(city.name, "Paris");
        assert!(d < 5.0, "{d}");
        assert!(table.nearest(-50.0, -140.0, 50.0).is_none(), "open Pacific");
    }

    fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
        let (p1, p2) = (a.0.to_radians(), b.0.to_radians());
        let dp = p2 - p1;
        let dl = (b.1 - a.1).to_radians();
        let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * h.sqrt().asin()
    }

    #[test]
    fn embedded_table_parses_with_quoted_names() {
        let table = CityTable::embedded().expect("embedded table parses");
        assert!(table.len() > 30_000, "only {} cities", table.len());
        assert_eq!(table.cities()[0].name, "Shanghai");
        assert!(
            table
                .cities()
                .iter()
                .any(|c| c.name == "Mianzhu, Deyang, Sichuan")
        );
    }

    #[test]
    fn sampling_follows_population() {
        let table = CityTable::parse(
            "geonameid,name,country,latitude,longitude,population\n\
             1,Big,AA,10,10,900\n2,Empty,BB,20,20,0\n3,Small,CC,30,30,100\n",
        )
        .expect("parses");
        let mut rng = rng(7);
        let mut counts = [0u32; 3];
        for _ in 0..20_000 {
            let city = table.sample(&mut rng);
            counts[(city.geonameid - 1) as usize] += 1;
        }
        assert_eq!(counts[1], 0, "a city of population 0 was drawn");
        let big_share = f64::from(counts[0]) / 20_000.0;
        // Binomial(20000, 0.9): standard deviation 0.0021; 0.015 is ~7 sigma.
        assert!((big_share - 0.9).abs() < 0.015, "share {big_share}");
    }

    #[test]
    fn same_seed_gives_same_locations() {
        let table = CityTable::embedded().expect("parses");
        let draw = |seed| {
            let mut rng = rng(seed);
            (0..100)
                .map(|_| table.sample_location(&mut rng, 25.0))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn jitter_stays_within_radius() {
        let mut rng = rng(11);
        for &(lat, lon) in &[
            (0.0, 0.0),
            (48.85, 2.35),
            (-33.9, 151.2),
            (64.1, -21.9),
            (10.0, 179.9),
        ] {
            let mut farthest: f64 = 0.0;
            for _ in 0..2000 {
                let moved = jitter(lat, lon, 50.0, &mut rng);
                assert!((-180.0..=180.0).contains(&moved.1));
                farthest = farthest.max(haversine_km((lat, lon), moved));
            }
            assert!(farthest <= 50.0 + 1e-6, "moved {farthest} km");
            assert!(farthest > 40.0, "never moved far: {farthest} km");
        }
        assert_eq!(jitter(1.0, 2.0, 0.0, &mut rng), (1.0, 2.0));
    }

    #[test]
    fn bad_rows_are_typed_errors() {
        let header = "geonameid,name,country,latitude,longitude,population\n";
        let bad_number = format!("{header}1,X,AA,north,10,5\n");
        assert!(matches!(
            CityTable::parse(&bad_number),
            Err(CityError::Malformed { row: 2, .. })
        ));
        let bad_lat = format!("{header}1,X,AA,95,10,5\n");
        assert!(matches!(
            CityTable::parse(&bad_lat),
            Err(CityError::BadCoordinates { row: 2, .. })
        ));
        let empty = format!("{header}1,X,AA,5,10,0\n");
        assert!(matches!(
            CityTable::parse(&empty),
            Err(CityError::NoPopulation)
        ));
    }
}
