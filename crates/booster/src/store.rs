//! Persistent state in an embedded SQLite database in the node's data dir: data usage per
//! source per calendar month (UTC), each source's last capacity estimate (so a restarted
//! node balances well from its first connection), and the policies added through the control
//! API (so they survive a restart).
//!
//! Counters live in memory as atomics ([`crate::source::Source`]); a flusher writes the deltas
//! every [`FLUSH_EVERY`] in one transaction. WAL mode makes each flush durable against a crash
//! of the process, so `kill -9` loses at most one interval of counts.

use crate::{policy::PolicySpec, source::Source};
use rusqlite::{params, Connection, OptionalExtension};
use std::{
    collections::HashMap,
    path::Path,
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub const FLUSH_EVERY: Duration = Duration::from_secs(2);
pub const DB_FILE: &str = "booster.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data dir {0}: {1}")]
    Dir(String, std::io::Error),
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("cannot encode for the database: {0}")]
    Encode(String),
}

/// A policy row: its id, and the rule or why it no longer parses.
pub type StoredPolicy = (i64, Result<PolicySpec, String>);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub struct Store {
    conn: Mutex<Connection>,
    /// Per source: `(rx, tx)` counter values already written, and the month they went to.
    flushed: Mutex<HashMap<String, (u64, u64)>>,
    month: Mutex<String>,
}

/// "YYYY-MM" in UTC for a unix time.
pub fn month_of(unix_secs: u64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = (unix_secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}")
}

pub fn current_month() -> String {
    month_of(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Dir(dir.display().to_string(), e))?;
        Self::open_file(&dir.join(DB_FILE))
    }

    pub fn open_file(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS usage (
                 source TEXT NOT NULL, month TEXT NOT NULL,
                 rx INTEGER NOT NULL DEFAULT 0, tx INTEGER NOT NULL DEFAULT 0,
                 PRIMARY KEY (source, month));
             CREATE TABLE IF NOT EXISTS capacity (
                 source TEXT PRIMARY KEY, bytes_per_sec REAL NOT NULL, updated INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS policy (
                 id INTEGER PRIMARY KEY AUTOINCREMENT, spec TEXT NOT NULL, created INTEGER NOT NULL);",
        )?;
        Ok(Store {
            conn: Mutex::new(conn),
            flushed: Mutex::new(HashMap::new()),
            month: Mutex::new(current_month()),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Usage `(rx, tx)` stored for a source and month.
    pub fn usage(&self, source: &str, month: &str) -> Result<(u64, u64), StoreError> {
        let row = self
            .conn()
            .query_row(
                "SELECT rx, tx FROM usage WHERE source = ?1 AND month = ?2",
                params![source, month],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .optional()?;
        Ok(row.unwrap_or((0, 0)))
    }

    /// All usage rows for a month, for status and the API.
    pub fn month_usage(&self, month: &str) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT source, rx, tx FROM usage WHERE month = ?1 ORDER BY source")?;
        let rows = stmt
            .query_map(params![month], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The months that have usage rows, oldest first ("YYYY-MM").
    pub fn months(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT DISTINCT month FROM usage ORDER BY month")?;
        let rows = stmt.query_map([], |r| r.get(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Policies added through the API, by id, oldest first. A row that no longer parses (written
    /// by another version) comes back as its error, so the caller can say which one it skips.
    pub fn policies(&self) -> Result<Vec<StoredPolicy>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id, spec FROM policy ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .map(|(id, json)| (id, serde_json::from_str(&json).map_err(|e| e.to_string())))
            .collect())
    }

    /// Stores a policy; returns its id (never reused, even after a delete).
    pub fn add_policy(&self, spec: &PolicySpec) -> Result<i64, StoreError> {
        let json = serde_json::to_string(spec).map_err(|e| StoreError::Encode(e.to_string()))?;
        let conn = self.conn();
        conn.execute(
            "INSERT INTO policy (spec, created) VALUES (?1, ?2)",
            params![json, unix_now() as i64],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Deletes a stored policy; `false` if there was none with that id.
    pub fn delete_policy(&self, id: i64) -> Result<bool, StoreError> {
        Ok(self.conn().execute("DELETE FROM policy WHERE id = ?1", params![id])? > 0)
    }

    /// Gives a newly added source this month's stored usage and its remembered capacity.
    pub fn load_into(&self, source: &Source) {
        let month = self.month.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match self.usage(&source.name, &month) {
            Ok((rx, tx)) => {
                source.month_base.store(rx + tx, Relaxed);
                source
                    .month_mark
                    .store(source.rx.load(Relaxed) + source.tx.load(Relaxed), Relaxed);
            }
            Err(e) => tracing::warn!(source = %source.name, error = %e, "cannot load usage"),
        }
        self.flushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(source.name.clone(), (source.rx.load(Relaxed), source.tx.load(Relaxed)));
        let cap: Result<Option<f64>, _> = self
            .conn()
            .query_row(
                "SELECT bytes_per_sec FROM capacity WHERE source = ?1",
                params![source.name],
                |r| r.get(0),
            )
            .optional();
        if let Ok(Some(c)) = cap {
            source.seed_capacity(c);
        }
    }

    /// Writes every source's counter deltas (and known capacities) in one transaction.
    pub fn flush(&self, sources: &[Arc<Source>]) -> Result<(), StoreError> {
        let month = current_month();
        let mut stored_month = self.month.lock().unwrap_or_else(|e| e.into_inner());
        let rollover = *stored_month != month;
        let mut flushed = self.flushed.lock().unwrap_or_else(|e| e.into_inner());
        let now = unix_now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for s in sources {
            let (rx, txb) = (s.rx.load(Relaxed), s.tx.load(Relaxed));
            let (frx, ftx) = flushed.get(&s.name).copied().unwrap_or((0, 0));
            let (drx, dtx) = (rx.saturating_sub(frx), txb.saturating_sub(ftx));
            if drx > 0 || dtx > 0 {
                // Bytes counted since the last flush go to the month they were counted in,
                // which is the stored month (at most one interval can straddle a rollover).
                tx.execute(
                    "INSERT INTO usage (source, month, rx, tx) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(source, month) DO UPDATE SET rx = rx + excluded.rx, tx = tx + excluded.tx",
                    params![s.name, *stored_month, drx as i64, dtx as i64],
                )?;
            }
            flushed.insert(s.name.clone(), (rx, txb));
            if rollover {
                s.month_base.store(0, Relaxed);
                s.month_mark.store(rx + txb, Relaxed);
            }
            let v = s.view();
            if v.capacity_known {
                tx.execute(
                    "INSERT INTO capacity (source, bytes_per_sec, updated) VALUES (?1, ?2, ?3)
                     ON CONFLICT(source) DO UPDATE SET bytes_per_sec = excluded.bytes_per_sec, updated = excluded.updated",
                    params![s.name, v.capacity, now as i64],
                )?;
            }
        }
        tx.commit()?;
        if rollover {
            *stored_month = month;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Tier, source::SourceKind};

    #[test]
    fn months() {
        assert_eq!(month_of(0), "1970-01");
        assert_eq!(month_of(951_782_400), "2000-02"); // 2000-02-29
        assert_eq!(month_of(1_798_675_200), "2026-12"); // 2026-12-31
        assert_eq!(month_of(1_798_761_600), "2027-01");
    }

    #[test]
    fn usage_survives_reopen_and_adds_up() {
        let dir = tempfile::tempdir().unwrap();
        let src = || {
            Arc::new(Source::new(
                "wwan0".into(),
                SourceKind::Iface { name: "wwan0".into() },
                Tier::Primary,
                None,
                None,
            ))
        };
        {
            let store = Store::open(dir.path()).unwrap();
            let s = src();
            store.load_into(&s);
            s.rx.store(1000, Relaxed);
            s.tx.store(10, Relaxed);
            store.flush(std::slice::from_ref(&s)).unwrap();
            s.rx.store(1500, Relaxed);
            store.flush(std::slice::from_ref(&s)).unwrap();
            // Not flushed: lost, as with kill -9 between flushes.
            s.rx.store(9999, Relaxed);
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.usage("wwan0", &current_month()).unwrap(), (1500, 10));
        let s = src();
        store.load_into(&s);
        assert_eq!(s.month_bytes(), 1510);
        s.rx.store(90, Relaxed);
        assert_eq!(s.month_bytes(), 1600);
        assert_eq!(store.months().unwrap(), [current_month()]);
    }

    #[test]
    fn policies_survive_reopen_and_ids_are_not_reused() {
        use crate::policy::{PolicyKind, PolicySpec};
        let dir = tempfile::tempdir().unwrap();
        let spec = |host: &str| PolicySpec {
            kind: PolicyKind::Block,
            uplink: None,
            hosts: vec![host.into()],
            ttl: None,
        };
        let (a, b) = {
            let store = Store::open(dir.path()).unwrap();
            let a = store.add_policy(&spec("a.example")).unwrap();
            let b = store.add_policy(&spec("b.example")).unwrap();
            assert!(store.delete_policy(b).unwrap());
            assert!(!store.delete_policy(b).unwrap(), "deleted twice");
            (a, b)
        };
        let store = Store::open(dir.path()).unwrap();
        let got = store.policies().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, a);
        assert_eq!(got[0].1.as_ref().unwrap(), &spec("a.example"));
        let c = store.add_policy(&spec("c.example")).unwrap();
        assert!(c > b, "ids are never reused: {c} after {b}");
    }
}
