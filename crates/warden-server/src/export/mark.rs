//! What a sink is known to have delivered, outside the database: the sequence number and leaf
//! hash of its last event. A backup of the database restores its cursor with the log it belongs
//! to, so only these still know how far the sink got once an older copy is put back (see
//! [`super::rolled_back`]). Every sink keeps one in `<data_dir>/export/<sink>.cursor`, as
//! `SEQ HASH`, which a database restored alone cannot bring back; a file sink's own file holds
//! its last record too, which not even a whole data dir restored can.

use std::io::{Read as _, Seek as _, SeekFrom};

use std::path::{Path, PathBuf};

use super::SinkConfig;

/// The last event a sink delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub seq: u64,
    pub hash: [u8; 32],
}

/// How much of the end of a file sink's file is read for its last record: records are far
/// smaller, and a file can be large.
const TAIL: u64 = 64 * 1024;

/// What sink `config` is known to have delivered last, each with where that is said.
pub fn delivered(data_dir: &Path, config: &SinkConfig) -> Vec<(Mark, PathBuf)> {
    let name = config.name();
    let mut found: Vec<_> = read(data_dir, name)
        .map(|m| (m, path(data_dir, name)))
        .into_iter()
        .collect();
    if let SinkConfig::File(c) = config {
        let mut rotated = c.path.clone().into_os_string();
        rotated.push(".1");
        // Just rotated, the file is empty or not made yet: the last record is in the newest
        // rotated one.
        for file in [c.path.clone(), rotated.into()] {
            if let Some(m) = last_record(&file) {
                found.push((m, file));
                break;
            }
        }
    }
    found
}

/// The last whole record of a file sink's file, if one is in its last [`TAIL`] bytes.
fn last_record(file: &Path) -> Option<Mark> {
    let mut f = std::fs::File::open(file).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    // A crash while writing can leave a cut line last: the record before it was delivered.
    String::from_utf8_lossy(&tail)
        .lines()
        .rev()
        .find_map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).ok()?;
            let seq = record["seq"].as_u64().filter(|&s| s > 0)?;
            let hash = hex::decode(record["leaf_hash"].as_str()?)
                .ok()?
                .try_into()
                .ok()?;
            Some(Mark { seq, hash })
        })
}

/// Where sink `name`'s mark is kept. Sink names are letters, digits, '-', '_' and '.', never
/// empty: always one file name.
pub fn path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("export").join(format!("{name}.cursor"))
}

/// Sink `name`'s mark, if it has one. An unreadable or damaged one is said in the server's log
/// and taken for none: it cannot tell how far the sink got, and the database's cursor still
/// decides where export resumes.
pub fn read(data_dir: &Path, name: &str) -> Option<Mark> {
    let path = path(data_dir, name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(sink = %name, error = %e, "cannot read {}; rollbacks under this sink go unseen until its next delivery", path.display());
            return None;
        }
    };
    let mark = parse(&text);
    if mark.is_none() {
        tracing::warn!(sink = %name, "{} is damaged; rollbacks under this sink go unseen until its next delivery", path.display());
    }
    mark
}

fn parse(text: &str) -> Option<Mark> {
    let (seq, hash) = text.trim_end().split_once(' ')?;
    let seq = seq.parse().ok().filter(|&s| s > 0)?;
    let hash = hex::decode(hash).ok()?.try_into().ok()?;
    Some(Mark { seq, hash })
}

/// Replaces sink `name`'s mark with `mark`, whole, so a crash leaves the old mark or the new
/// one (once per delivered batch).
pub async fn write(data_dir: &Path, name: &str, mark: Mark) -> anyhow::Result<()> {
    let path = path(data_dir, name);
    let text = format!("{} {}\n", mark.seq, hex::encode(mark.hash));
    tokio::task::spawn_blocking(move || {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        crate::durable_file::replace(&path, text.as_bytes(), 0o600)
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_mark_reads_back_as_written_and_a_damaged_one_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path(), "siem"), None);
        let mark = Mark {
            seq: 21,
            hash: [0xab; 32],
        };
        write(dir.path(), "siem", mark).await.unwrap();
        assert_eq!(read(dir.path(), "siem"), Some(mark));
        for damaged in ["", "21", "0 ab", &format!("21 {}", "ab".repeat(31)), "x y"] {
            std::fs::write(path(dir.path(), "siem"), damaged).unwrap();
            assert_eq!(read(dir.path(), "siem"), None, "{damaged:?}");
        }
    }

    #[test]
    fn a_file_sink_is_known_by_its_last_whole_record() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("audit.jsonl");
        let config =
            SinkConfig::File(toml::from_str(&format!("name = \"f\"\npath = {out:?}\n")).unwrap());
        assert!(delivered(dir.path(), &config).is_empty());
        let record = |seq: u64| {
            format!(
                "{{\"seq\":{seq},\"leaf_hash\":\"{}\",\"event\":{{}}}}\n",
                "cd".repeat(32)
            )
        };
        std::fs::write(dir.path().join("audit.jsonl.1"), record(4)).unwrap();
        std::fs::write(&out, "").unwrap();
        let mark = |seq| Mark {
            seq,
            hash: [0xcd; 32],
        };
        assert_eq!(
            delivered(dir.path(), &config),
            vec![(mark(4), dir.path().join("audit.jsonl.1"))]
        );
        std::fs::write(&out, record(5) + &record(6) + "{\"seq\":7,\"lea").unwrap();
        assert_eq!(delivered(dir.path(), &config), vec![(mark(6), out)]);
    }
}
