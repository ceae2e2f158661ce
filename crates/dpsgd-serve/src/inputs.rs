//! The body of `POST /v1/predict`, `{"inputs": [[f32, ...], ...]}`,
//! checked while it is parsed.
//!
//! The values go straight into one row-major vector as they are read: no
//! `Vec` per row, and the parse stops at the first row past `max_batch`,
//! at the first row of another length than the model's input and at the
//! first value that is not a finite `f32`, before the rest of the body is
//! looked at. What a request can make the server hold is then at most
//! `max_batch × input_len` values (plus the body itself), however its rows
//! are shaped.

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::fmt;

/// A request's inputs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Inputs {
    /// Every value, row after row.
    pub flat: Vec<f32>,
    /// Number of rows (inputs).
    pub rows: usize,
}

/// Why a body is refused.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Invalid {
    /// More than `max_batch` inputs (seen at the one past it).
    TooMany {
        /// The most a request may carry.
        max_batch: usize,
    },
    /// No input at all.
    Empty {
        /// The most a request may carry.
        max_batch: usize,
    },
    /// An input of another length than the model's.
    Length {
        /// Which input (from 0).
        row: usize,
        /// Its length, or `None` when it is longer than `dim` (the parse
        /// stops at value `dim + 1`).
        found: Option<usize>,
        /// The model's input length.
        dim: usize,
    },
    /// A value that is not a finite `f32`.
    NotFinite {
        /// Which input (from 0).
        row: usize,
    },
    /// Not `{"inputs": [[numbers]]}`.
    Malformed(String),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooMany { max_batch } => {
                write!(f, "send 1 to {max_batch} inputs per request, not more")
            }
            Self::Empty { max_batch } => {
                write!(f, "send 1 to {max_batch} inputs per request, not 0")
            }
            Self::Length {
                row,
                found: Some(len),
                dim,
            } => write!(f, "input {row} has {len} values; the model takes {dim}"),
            Self::Length {
                row,
                found: None,
                dim,
            } => write!(
                f,
                "input {row} has more than {dim} values; the model takes {dim}"
            ),
            Self::NotFinite { row } => write!(
                f,
                "input {row}: inputs must be finite numbers (within f32's range)"
            ),
            Self::Malformed(e) => write!(f, "expected {{\"inputs\": [[numbers]]}}: {e}"),
        }
    }
}

/// Parses `body` as `{"inputs": [...]}` of 1 to `max_batch` inputs of
/// `dim` finite values each (other fields are ignored).
pub(crate) fn parse(body: &[u8], dim: usize, max_batch: usize) -> Result<Inputs, Invalid> {
    let problem = Cell::new(None);
    let seed = Request {
        dim,
        max_batch,
        problem: &problem,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = seed
        .deserialize(&mut de)
        .and_then(|inputs| de.end().map(|()| inputs));
    match parsed {
        Ok(inputs) if inputs.rows == 0 => Err(Invalid::Empty { max_batch }),
        Ok(inputs) => Ok(inputs),
        Err(e) => Err(problem
            .take()
            .unwrap_or_else(|| Invalid::Malformed(e.to_string()))),
    }
}

/// The fields of the request object.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Inputs,
    #[serde(other)]
    Other,
}

/// The request object.
#[derive(Clone, Copy)]
struct Request<'a> {
    dim: usize,
    max_batch: usize,
    problem: &'a Cell<Option<Invalid>>,
}

impl<'de> DeserializeSeed<'de> for Request<'_> {
    type Value = Inputs;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Inputs, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Request<'_> {
    type Value = Inputs;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object {\"inputs\": [[numbers]]}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Inputs, A::Error> {
        let mut inputs = None;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Inputs if inputs.is_some() => {
                    return Err(de::Error::duplicate_field("inputs"));
                }
                Field::Inputs => {
                    inputs = Some(map.next_value_seed(Rows {
                        dim: self.dim,
                        max_batch: self.max_batch,
                        problem: self.problem,
                    })?);
                }
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        inputs.ok_or_else(|| de::Error::missing_field("inputs"))
    }
}

/// Records `invalid` and fails, without reading the value it is asked
/// for: what stops a parse at the first row or value too many.
struct Reject<'a> {
    invalid: Invalid,
    problem: &'a Cell<Option<Invalid>>,
}

impl Reject<'_> {
    fn fail<E: de::Error>(self) -> E {
        let e = E::custom(&self.invalid);
        self.problem.set(Some(self.invalid));
        e
    }
}

impl<'de> DeserializeSeed<'de> for Reject<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
        Err(self.fail())
    }
}

/// The array of inputs.
struct Rows<'a> {
    dim: usize,
    max_batch: usize,
    problem: &'a Cell<Option<Invalid>>,
}

impl<'de> DeserializeSeed<'de> for Rows<'_> {
    type Value = Inputs;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Inputs, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Rows<'_> {
    type Value = Inputs;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of inputs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Inputs, A::Error> {
        let mut flat = Vec::new();
        let mut rows = 0;
        loop {
            if rows == self.max_batch {
                // Another input, whatever it holds, is one too many.
                seq.next_element_seed(Reject {
                    invalid: Invalid::TooMany {
                        max_batch: self.max_batch,
                    },
                    problem: self.problem,
                })?;
                break;
            }
            let row = Row {
                dim: self.dim,
                row: rows,
                flat: &mut flat,
                problem: self.problem,
            };
            match seq.next_element_seed(row)? {
                Some(()) => rows += 1,
                None => break,
            }
        }
        Ok(Inputs { flat, rows })
    }
}

/// One input, appended to `flat`.
struct Row<'a, 'b> {
    dim: usize,
    row: usize,
    flat: &'b mut Vec<f32>,
    problem: &'a Cell<Option<Invalid>>,
}

impl<'de> DeserializeSeed<'de> for Row<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Row<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an input: an array of {} numbers", self.dim)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let reject = |invalid| Reject {
            invalid,
            problem: self.problem,
        };
        let mut len = 0;
        loop {
            if len == self.dim {
                // A value past the model's input length is one too many.
                seq.next_element_seed(reject(Invalid::Length {
                    row: self.row,
                    found: None,
                    dim: self.dim,
                }))?;
                return Ok(());
            }
            match seq.next_element::<f64>()? {
                Some(v) => {
                    // Out of f32's range: ±∞ as f32.
                    let x = v as f32;
                    if !x.is_finite() {
                        return Err(reject(Invalid::NotFinite { row: self.row }).fail());
                    }
                    self.flat.push(x);
                    len += 1;
                }
                None if len == self.dim => return Ok(()),
                None => {
                    return Err(reject(Invalid::Length {
                        row: self.row,
                        found: Some(len),
                        dim: self.dim,
                    })
                    .fail());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_read_inputs_row_major_and_ignore_other_fields() {
        let body = br#"{"id": {"x": [1, 2]}, "inputs": [[1, 2.5], [-3e3, 0]]}"#;
        assert_eq!(
            parse(body, 2, 4),
            Ok(Inputs {
                flat: vec![1.0, 2.5, -3000.0, 0.0],
                rows: 2
            })
        );
    }

    #[test]
    fn should_stop_at_the_first_row_past_max_batch_before_reading_it() {
        // The third row is not even JSON: the parse never gets there.
        let body = br#"{"inputs": [[1, 2], [3, 4], GARBAGE"#;
        assert_eq!(parse(body, 2, 2), Err(Invalid::TooMany { max_batch: 2 }));
        let body = br#"{"inputs": [[1, 2], [3, 4], [5, 6]]}"#;
        assert_eq!(parse(body, 2, 2), Err(Invalid::TooMany { max_batch: 2 }));
        assert!(parse(body, 2, 3).is_ok());
    }

    #[test]
    fn should_stop_at_the_first_row_of_another_length() {
        // An empty row is refused where it stands, not after all of them.
        let body = br#"{"inputs": [[], GARBAGE"#;
        assert_eq!(
            parse(body, 2, 1000),
            Err(Invalid::Length {
                row: 0,
                found: Some(0),
                dim: 2
            })
        );
        // A row too long: refused at its value dim + 1.
        let body = br#"{"inputs": [[1, 2], [1, 2, 3, GARBAGE"#;
        assert_eq!(
            parse(body, 2, 1000),
            Err(Invalid::Length {
                row: 1,
                found: None,
                dim: 2
            })
        );
    }

    #[test]
    fn should_refuse_values_that_are_no_finite_f32() {
        for v in ["1e39", "-4e38", "1e400"] {
            let body = format!(r#"{{"inputs": [[0, {v}]]}}"#);
            let e = parse(body.as_bytes(), 2, 4).unwrap_err();
            assert!(
                matches!(e, Invalid::NotFinite { row: 0 } | Invalid::Malformed(_)),
                "{v}: {e:?}"
            );
        }
        assert_eq!(
            parse(br#"{"inputs": [[0, 1e39]]}"#, 2, 4),
            Err(Invalid::NotFinite { row: 0 })
        );
        assert!(parse(br#"{"inputs": [[0, 3e38]]}"#, 2, 4).is_ok());
    }

    #[test]
    fn should_refuse_malformed_bodies() {
        for body in [
            &br#"{"inputs": []}"#[..],
            br#"{}"#,
            br#"[]"#,
            br#"{"inputs": [[1, "2"]]}"#,
            br#"{"inputs": [1, 2]}"#,
            br#"{"inputs": [[1, 2]], "inputs": [[1, 2]]}"#,
            br#"{"inputs": [[1, 2]]} trailing"#,
            b"",
        ] {
            assert!(
                parse(body, 2, 4).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            parse(br#"{"inputs": []}"#, 2, 4),
            Err(Invalid::Empty { max_batch: 4 })
        );
    }
}
