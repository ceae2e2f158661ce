//! Writes the user-level experiment's data set (docs/user-level.md): UCI
//! Adult's records assigned to synthetic users who own 1–50 records each,
//! a heavy user's records near-identical.
//!
//! Run: `cargo run --release --example synthetic_users -- [USERS] [OUT]`
//! (default 2000 users, `users.csv`); reads `adult/adult.data` under the
//! data folder (`DPSGD_DATA_DIR`, default `../shared/data`).
//!
//! The rule, seeded (ChaCha20, seed 29), one Adult row per user in file
//! order:
//! * with probability 0.8 a user is **light**: 1–3 records (uniform);
//!   with probability 0.2 **heavy**: 10–50 records (uniform);
//! * the user's first record is their Adult row as it is; each further
//!   record is a near-identical visit: the same categorical values and
//!   label, `age` and `education-num` as they are, `hours-per-week`
//!   moved by an integer in [−2, 2] (kept in 1..=99), `fnlwgt` scaled by
//!   a factor in [0.99, 1.01], the capital gain and loss as they are;
//! * the first column, `user`, is `u<index>`.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::fmt::Write as _;

/// Adult's columns (the file has no header).
const HEADER: &str = "user,age,workclass,fnlwgt,education,education-num,marital-status,occupation,relationship,race,sex,capital-gain,capital-loss,hours-per-week,native-country,income";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let users: usize = match args.next() {
        Some(n) => n.parse()?,
        None => 2000,
    };
    let out = args.next().unwrap_or_else(|| "users.csv".into());
    let source = dpsgd::data::data_dir().join("adult").join("adult.data");
    let text = std::fs::read_to_string(&source)
        .map_err(|e| format!("{}: {e} (set DPSGD_DATA_DIR)", source.display()))?;
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split(',').map(str::trim).collect::<Vec<_>>())
        .filter(|f| f.len() == 15)
        .take(users)
        .collect();
    if rows.len() < users {
        return Err(format!("{} has only {} rows", source.display(), rows.len()).into());
    }
    let mut rng = ChaCha20Rng::seed_from_u64(29);
    let mut csv = String::from(HEADER);
    csv.push('\n');
    let (mut records, mut heavy) = (0usize, 0usize);
    for (u, row) in rows.iter().enumerate() {
        let n = if rng.random_bool(0.2) {
            heavy += 1;
            rng.random_range(10..=50)
        } else {
            rng.random_range(1..=3)
        };
        for visit in 0..n {
            let mut fields: Vec<String> = row.iter().map(|f| (*f).to_owned()).collect();
            if visit > 0 {
                let fnlwgt: f64 = fields[2].parse()?;
                fields[2] = format!("{:.0}", fnlwgt * rng.random_range(0.99..=1.01));
                let hours: i64 = fields[12].parse()?;
                fields[12] = (hours + rng.random_range(-2..=2)).clamp(1, 99).to_string();
            }
            writeln!(csv, "u{u},{}", fields.join(","))?;
        }
        records += n;
    }
    std::fs::write(&out, csv)?;
    println!("{out}: {users} users ({heavy} heavy), {records} records");
    Ok(())
}
