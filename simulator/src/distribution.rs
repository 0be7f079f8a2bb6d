//! Probability distributions named in scenario files, e.g.
//! `weibull(shape=0.5, scale=2h)`, `exponential(mean=1h)`, `lognormal(median=100GiB, sigma=1)`.
//!
//! Owns the text syntax of a distribution, its validation, its mean and its
//! sampling from a caller's RNG (through `rand_distr`). The unit of the values
//! (milliseconds for durations, bytes for sizes) is decided by the caller,
//! which passes the value parser; this module must not know about nodes or events.

use std::collections::BTreeMap;

use rand::Rng;
use rand_distr::Distribution as _;

/// A distribution of non-negative values (milliseconds or bytes, by context).
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    /// Always the same value. Written as a plain value (`2h`) or `constant(value=2h)`.
    Constant { value: f64 },
    /// `exponential(mean=X)`: memoryless.
    Exponential { mean: f64 },
    /// `weibull(shape=K, scale=X)`: shape < 1 gives many short and a few very long sessions.
    Weibull { shape: f64, scale: f64 },
    /// `lognormal(median=X, sigma=S)`.
    LogNormal { median: f64, sigma: f64 },
    /// `uniform(min=X, max=Y)`.
    Uniform { min: f64, max: f64 },
    /// `pareto(scale=X, shape=A)`: heavy tail, minimum X.
    Pareto { scale: f64, shape: f64 },
}

/// A distribution text that cannot be used; the message says how to write it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DistributionError {
    #[error(
        "{0:?} is not a distribution: write a value, or one of exponential(mean=X), \
         weibull(shape=K, scale=X), lognormal(median=X, sigma=S), uniform(min=X, max=Y), pareto(scale=X, shape=A)"
    )]
    Syntax(String),
    #[error("{text:?}: unknown distribution {name:?}")]
    UnknownName { text: String, name: String },
    #[error("{text:?}: {name} needs the parameter `{parameter}`")]
    MissingParameter {
        text: String,
        name: &'static str,
        parameter: &'static str,
    },
    #[error("{text:?}: unknown parameter `{parameter}`")]
    UnknownParameter { text: String, parameter: String },
    #[error("{text:?}: parameter `{parameter}` has a bad value: {problem}")]
    BadValue {
        text: String,
        parameter: String,
        problem: String,
    },
    #[error("{text:?}: {problem}")]
    OutOfRange { text: String, problem: &'static str },
}

impl Distribution {
    /// Parses `name(key=value, ...)` or a plain value. `value` parses values that carry
    /// units (durations or sizes); `shape` and `sigma` are plain numbers.
    pub fn parse<F, E>(text: &str, value: F) -> Result<Distribution, DistributionError>
    where
        F: Fn(&str) -> Result<f64, E>,
        E: std::fmt::Display,
    {
        let trimmed = text.trim();
        let Some(open) = trimmed.find('(') else {
            let v = value(trimmed).map_err(|e| DistributionError::BadValue {
                text: text.to_string(),
                parameter: "value".to_string(),
                problem: e.to_string(),
            })?;
            return Distribution::Constant { value: v }.checked(text);
        };
        let name = trimmed[..open].trim().to_ascii_lowercase();
        let inner = trimmed[open + 1..]
            .strip_suffix(')')
            .ok_or_else(|| DistributionError::Syntax(text.to_string()))?;
        let mut params: BTreeMap<String, String> = BTreeMap::new();
        for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| DistributionError::Syntax(text.to_string()))?;
            params.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let mut take = |name: &'static str, parameter: &'static str, unit: bool| {
            let raw = params
                .remove(parameter)
                .ok_or(DistributionError::MissingParameter {
                    text: text.to_string(),
                    name,
                    parameter,
                })?;
            let parsed = if unit {
                value(&raw).map_err(|e| e.to_string())
            } else {
                raw.parse::<f64>()
                    .map_err(|_| format!("{raw:?} is not a number"))
            };
            parsed.map_err(|problem| DistributionError::BadValue {
                text: text.to_string(),
                parameter: parameter.to_string(),
                problem,
            })
        };
        let dist = match name.as_str() {
            "constant" => Distribution::Constant {
                value: take("constant", "value", true)?,
            },
            "exponential" => Distribution::Exponential {
                mean: take("exponential", "mean", true)?,
            },
            "weibull" => Distribution::Weibull {
                shape: take("weibull", "shape", false)?,
                scale: take("weibull", "scale", true)?,
            },
            "lognormal" => Distribution::LogNormal {
                median: take("lognormal", "median", true)?,
                sigma: take("lognormal", "sigma", false)?,
            },
            "uniform" => Distribution::Uniform {
                min: take("uniform", "min", true)?,
                max: take("uniform", "max", true)?,
            },
            "pareto" => Distribution::Pareto {
                scale: take("pareto", "scale", true)?,
                shape: take("pareto", "shape", false)?,
            },
            _ => {
                return Err(DistributionError::UnknownName {
                    text: text.to_string(),
                    name,
                });
            }
        };
        if let Some(parameter) = params.into_keys().next() {
            return Err(DistributionError::UnknownParameter {
                text: text.to_string(),
                parameter,
            });
        }
        dist.checked(text)
    }

    fn checked(self, text: &str) -> Result<Distribution, DistributionError> {
        let bad = |problem| {
            Err(DistributionError::OutOfRange {
                text: text.to_string(),
                problem,
            })
        };
        let finite_pos = |x: f64| x.is_finite() && x > 0.0;
        match self {
            Distribution::Constant { value } if !(value.is_finite() && value >= 0.0) => {
                bad("the value must be finite and not negative")
            }
            Distribution::Exponential { mean } if !finite_pos(mean) => {
                bad("the mean must be above zero")
            }
            Distribution::Weibull { shape, scale } if !finite_pos(shape) || !finite_pos(scale) => {
                bad("shape and scale must be above zero")
            }
            Distribution::LogNormal { median, sigma }
                if !(finite_pos(median) && sigma.is_finite() && sigma >= 0.0) =>
            {
                bad("median must be above zero and sigma not negative")
            }
            Distribution::Uniform { min, max }
                if !(min.is_finite() && max.is_finite() && 0.0 <= min && min <= max) =>
            {
                bad("need 0 <= min <= max")
            }
            Distribution::Pareto { scale, shape } if !finite_pos(scale) || !finite_pos(shape) => {
                bad("scale and shape must be above zero")
            }
            ok => Ok(ok),
        }
    }

    /// The mean, or `f64::INFINITY` when it does not exist (Pareto with shape <= 1).
    pub fn mean(&self) -> f64 {
        match *self {
            Distribution::Constant { value } => value,
            Distribution::Exponential { mean } => mean,
            Distribution::Weibull { shape, scale } => scale * libm::tgamma(1.0 + 1.0 / shape),
            Distribution::LogNormal { median, sigma } => median * (sigma * sigma / 2.0).exp(),
            Distribution::Uniform { min, max } => (min + max) / 2.0,
            Distribution::Pareto { scale, shape } => {
                if shape <= 1.0 {
                    f64::INFINITY
                } else {
                    shape * scale / (shape - 1.0)
                }
            }
        }
    }

    /// One draw (never negative, never NaN).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        let x = match *self {
            Distribution::Constant { value } => value,
            // Parameters were validated in `checked`; a constructor refusing them
            // would be a bug, and the fallback keeps the simulation going with the mean.
            Distribution::Exponential { mean } => rand_distr::Exp::new(1.0 / mean)
                .map(|d| d.sample(rng))
                .unwrap_or(mean),
            Distribution::Weibull { shape, scale } => rand_distr::Weibull::new(scale, shape)
                .map(|d| d.sample(rng))
                .unwrap_or(scale),
            Distribution::LogNormal { median, sigma } => {
                rand_distr::LogNormal::new(median.ln(), sigma)
                    .map(|d| d.sample(rng))
                    .unwrap_or(median)
            }
            Distribution::Uniform { min, max } => {
                if max > min {
                    rand_distr::Uniform::new(min, max)
                        .map(|d| d.sample(rng))
                        .unwrap_or(min)
                } else {
                    min
                }
            }
            Distribution::Pareto { scale, shape } => rand_distr::Pareto::new(scale, shape)
                .map(|d| d.sample(rng))
                .unwrap_or(scale),
        };
        if x.is_finite() && x >= 0.0 { x } else { 0.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    fn hours(text: &str) -> Result<f64, String> {
        text.strip_suffix('h')
            .and_then(|n| n.parse::<f64>().ok())
            .ok_or_else(|| format!("{text:?} is not hours"))
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(
            Distribution::parse("weibull(shape=0.5, scale=2h)", hours),
            Ok(Distribution::Weibull {
                shape: 0.5,
                scale: 2.0
            })
        );
        assert_eq!(
            Distribution::parse(" 3h ", hours),
            Ok(Distribution::Constant { value: 3.0 })
        );
        assert_eq!(
            Distribution::parse("exponential(mean=1h)", hours),
            Ok(Distribution::Exponential { mean: 1.0 })
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(matches!(
            Distribution::parse("weibull(scale=2h)", hours),
            Err(DistributionError::MissingParameter {
                parameter: "shape",
                ..
            })
        ));
        assert!(matches!(
            Distribution::parse("gauss(mean=1h)", hours),
            Err(DistributionError::UnknownName { .. })
        ));
        assert!(matches!(
            Distribution::parse("exponential(mean=1h, rate=2)", hours),
            Err(DistributionError::UnknownParameter { .. })
        ));
        assert!(matches!(
            Distribution::parse("exponential(mean=-1h)", hours),
            Err(DistributionError::OutOfRange { .. })
        ));
        assert!(matches!(
            Distribution::parse("exponential(mean=soon)", hours),
            Err(DistributionError::BadValue { .. })
        ));
    }

    #[test]
    fn sample_means_match_closed_forms() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        for dist in [
            Distribution::Exponential { mean: 2.0 },
            Distribution::Weibull {
                shape: 1.5,
                scale: 3.0,
            },
            Distribution::LogNormal {
                median: 1.0,
                sigma: 0.5,
            },
            Distribution::Uniform { min: 1.0, max: 5.0 },
            Distribution::Pareto {
                scale: 1.0,
                shape: 3.0,
            },
        ] {
            let n = 200_000;
            let mean = (0..n).map(|_| dist.sample(&mut rng)).sum::<f64>() / f64::from(n);
            let expected = dist.mean();
            assert!(
                (mean - expected).abs() / expected < 0.02,
                "{dist:?}: sample mean {mean}, closed form {expected}"
            );
        }
    }
}
