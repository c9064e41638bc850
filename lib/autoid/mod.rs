//! auto-id (specs/auto-id.md): a workload proves it holds the secret entropy file and gets a
//! credential. [`wire`] holds both protocol versions' formats, [`server`] autoidd's side,
//! [`client`] autoid's. This file: the entropy file, the credential store, the v1 interval
//! policy.

pub mod challenge;
pub mod client;
pub mod server;
pub mod wire;

use std::io::Read;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::locked::Locked;
use wire::Tuple;

/// autoidd's default TCP port (autoidd(8), "PORT").
pub const DEFAULT_PORT: u16 = 4440;
/// The original's entropy file: 2048 lines of 2048 `[A-Za-z0-9]` characters and a LF.
const ENTROPY_LINES: usize = 2048;
const ENTROPY_WIDTH: usize = 2048;
pub const ENTROPY_LEN: usize = ENTROPY_LINES * (ENTROPY_WIDTH + 1);
/// Largest entropy file loaded.
const MAX_ENTROPY: usize = 64 << 20;
/// Smallest entropy file accepted (v2 needs room for its disjoint ranges).
pub const MIN_ENTROPY: usize = 64 << 10;
/// Largest secret served.
pub const MAX_SECRET: usize = 64 << 10;

/// An entropy file in locked, zeroized memory.
pub struct Entropy(Locked);

impl Entropy {
    pub fn load(path: &Path) -> std::io::Result<Entropy> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len() as usize;
        if len > MAX_ENTROPY {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("larger than {MAX_ENTROPY} bytes"),
            ));
        }
        let mut buf = Locked::with_capacity(len);
        while !buf.spare_mut().is_empty() {
            match f.read(buf.spare_mut()) {
                Ok(0) => break,
                Ok(n) => buf.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if buf.len() < MIN_ENTROPY {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} bytes: too short (at least {MIN_ENTROPY}; `autoidd gen-entropy` writes {ENTROPY_LEN})",
                    buf.len()
                ),
            ));
        }
        Ok(Entropy(buf))
    }

    pub fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// A new entropy file's contents in the original's format (`generate_entropy.sh 2048`), from
/// the OS CSPRNG without modulo bias.
pub fn gen_entropy() -> Zeroizing<Vec<u8>> {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = Zeroizing::new(Vec::with_capacity(ENTROPY_LEN));
    let mut col = 0;
    while out.len() < ENTROPY_LEN {
        let chunk = Zeroizing::new(crate::secret::random_bytes(65536));
        for &b in chunk.iter() {
            if out.len() == ENTROPY_LEN {
                break;
            }
            if (b as usize) >= 62 * 4 {
                continue;
            }
            out.push(ALNUM[b as usize % 62]);
            col += 1;
            if col == ENTROPY_WIDTH {
                out.push(b'\n');
                col = 0;
            }
        }
    }
    out
}

/// Writes a new entropy file (0600, atomically, not through a symlink); an existing one is
/// replaced only with `force`.
pub fn write_entropy(path: &Path, force: bool) -> std::io::Result<()> {
    crate::privfile::write_key(path, &gen_entropy(), 0o600, force).map(|_| ())
}

/// Why a v1 request's intervals are refused (the bypass of specs/auto-id.md §5).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{0} tuples, not {n}", n = wire::MAX_SNIPPETS)]
    Count(usize),
    #[error("tuple {0}: a, b, l must be in [0, 2047] with a != b")]
    Range(usize),
    #[error("tuple {0} falls outside the entropy file")]
    Outside(usize),
    #[error("the snippets cover {0} distinct bytes, fewer than the minimum {1}")]
    TooFew(usize, usize),
}

/// The v1 interval policy: exactly 4 tuples as the original client draws them (so every
/// snippet is non-empty), each inside the file, and together covering at least `min_bytes`
/// distinct bytes. Snippets may overlap, as the stock client's random ones sometimes do: what
/// closes the bypass is that the union is large, so the hash covers bytes only the holder of
/// the file knows (a snippet holds at most one line end, the only bytes known in advance).
pub fn check_v1_intervals(
    t: &[Tuple],
    file_len: usize,
    min_bytes: usize,
) -> Result<(), PolicyError> {
    if t.len() != wire::MAX_SNIPPETS {
        return Err(PolicyError::Count(t.len()));
    }
    let ok = |v: i64| (0..wire::MAX_SIZE).contains(&v);
    let mut spans = Vec::with_capacity(wire::MAX_SNIPPETS);
    for (i, x) in t.iter().enumerate() {
        if !(ok(x.a) && ok(x.b) && ok(x.l)) || x.a == x.b {
            return Err(PolicyError::Range(i + 1));
        }
        // In range, so 0 <= lo < hi < 2048 * 2048.
        let (lo, hi) = x.bounds();
        let (lo, hi) = (lo as usize, hi as usize);
        if hi > file_len {
            return Err(PolicyError::Outside(i + 1));
        }
        spans.push((lo, hi));
    }
    let covered = union_len(&mut spans);
    if covered < min_bytes {
        return Err(PolicyError::TooFew(covered, min_bytes));
    }
    Ok(())
}

/// Bytes covered by the union of the half-open `spans` (sorted in place).
fn union_len(spans: &mut [(usize, usize)]) -> usize {
    spans.sort_unstable();
    let mut total = 0;
    let mut end = 0;
    for &(lo, hi) in spans.iter() {
        let lo = lo.max(end);
        if hi > lo {
            total += hi - lo;
        }
        end = end.max(hi);
    }
    total
}

/// Maps the original's `credential_source` (`store,secret_id[,version_id[,version_stage]]`) to
/// a secret id of the local store. The store field is ignored, as the original did; a
/// version id is refused (the store keeps one version); a version stage must be AWSCURRENT.
pub fn map_credential_source(c: &str) -> Result<&str, String> {
    let f: Vec<&str> = c.split(',').collect();
    if f.len() < 2 {
        return Err("credential_source has fewer than 2 fields (store,secret_id)".into());
    }
    if f.len() > 4 {
        return Err("credential_source has more than 4 fields".into());
    }
    if f.len() >= 3 && !f[2].is_empty() {
        return Err("secret versions are not supported (version_id given)".into());
    }
    if f.len() == 4 && !f[3].is_empty() && f[3] != "AWSCURRENT" {
        return Err(format!("version stage {:?} is not supported", f[3]));
    }
    Ok(f[1])
}

/// The local credential store: a directory with one file per secret id.
#[derive(Clone, Debug)]
pub struct Store {
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bad secret id {0:?} (allowed: 1-128 of A-Z a-z 0-9 . _ - @, not starting with .)")]
    BadId(String),
    #[error("no secret {0:?}")]
    NotFound(String),
    #[error("secret {0:?}: file is readable by group or others (chmod 0600)")]
    Exposed(String),
    #[error("secret {0:?}: {1}")]
    Io(String, std::io::Error),
}

/// Credential names autoidd takes its own key and entropy file from (autoidd.service); never
/// served as secrets.
pub const KEY_CREDENTIAL: &str = "autoidd.key";
pub const ENTROPY_CREDENTIAL: &str = "autoidd.entropy";

/// A file of `$CREDENTIALS_DIRECTORY`, if systemd passed one of that name.
pub fn credential(name: &str) -> Option<PathBuf> {
    let d = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty())?;
    let p = PathBuf::from(d).join(name);
    p.is_file().then_some(p)
}

pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'@'))
}

impl Store {
    /// `$CREDENTIALS_DIRECTORY` when set, else `fallback`.
    pub fn default_dir(fallback: &Path) -> PathBuf {
        match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => fallback.to_path_buf(),
        }
    }

    /// Reads secret `id` (one trailing newline dropped). Symlinks are not followed; files
    /// with group or other permission bits are refused.
    pub fn get(&self, id: &str) -> Result<Locked, StoreError> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        if !valid_id(id) {
            return Err(StoreError::BadId(id.chars().take(64).collect()));
        }
        if id == KEY_CREDENTIAL || id == ENTROPY_CREDENTIAL {
            return Err(StoreError::NotFound(id.into()));
        }
        let p = self.dir.join(id);
        let f = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&p)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(id.into()))
            }
            Err(e) => return Err(StoreError::Io(id.into(), e)),
        };
        let m = f.metadata().map_err(|e| StoreError::Io(id.into(), e))?;
        if !m.is_file() {
            return Err(StoreError::NotFound(id.into()));
        }
        if m.mode() & 0o077 != 0 {
            return Err(StoreError::Exposed(id.into()));
        }
        let mut s =
            crate::locked::read_all(&f, MAX_SECRET).map_err(|e| StoreError::Io(id.into(), e))?;
        if s.as_bytes().last() == Some(&b'\n') {
            s.truncate(s.len() - 1);
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Vec<Tuple> {
        wire::parse_intervals(s).unwrap()
    }

    #[test]
    fn policy_refuses_the_bypass_and_passes_stock_requests() {
        let n = ENTROPY_LEN;
        assert_eq!(
            check_v1_intervals(&t("0,0,0"), n, 32),
            Err(PolicyError::Count(1))
        );
        assert_eq!(
            check_v1_intervals(&t("9999999,9999999,0"), n, 32),
            Err(PolicyError::Count(1))
        );
        assert_eq!(
            check_v1_intervals(&t("2048,2049,0|2048,2049,0|2048,2049,0|2048,2049,0"), n, 32),
            Err(PolicyError::Range(1))
        );
        // Empty tuples (a == b) and negative offsets, even with no minimum.
        assert_eq!(
            check_v1_intervals(&t("5,5,0|1,2,1|1,2,2|1,2,3"), n, 0),
            Err(PolicyError::Range(1))
        );
        assert_eq!(
            check_v1_intervals(&t("1,2,1|1,2,2|1,2,3|7,7,9"), n, 0),
            Err(PolicyError::Range(4))
        );
        assert_eq!(
            check_v1_intervals(&t("-1,5,0|1,2,1|1,2,2|1,2,3"), n, 0),
            Err(PolicyError::Range(1))
        );
        // Outside the file.
        assert_eq!(
            check_v1_intervals(&t("0,2047,2047|1,2,1|1,2,2|1,2,3"), 2047 * 2048 + 100, 0),
            Err(PolicyError::Outside(1))
        );
        // The four known line ends (byte 2048 + 2049k is tuple k,k+1,k+1): 4 bytes.
        assert_eq!(
            check_v1_intervals(&t("0,1,1|1,2,2|2,3,3|3,4,4"), n, 32),
            Err(PolicyError::TooFew(4, 32))
        );
        // Overlap is allowed, but only distinct bytes count: four copies of one span, and
        // nested spans, cover what the largest covers.
        assert_eq!(
            check_v1_intervals(&t("100,120,0|100,120,0|100,120,0|100,120,0"), n, 32),
            Err(PolicyError::TooFew(20, 32))
        );
        assert_eq!(
            check_v1_intervals(&t("100,130,0|105,110,0|120,101,0|129,100,0"), n, 32),
            Err(PolicyError::TooFew(30, 32))
        );
        assert_eq!(
            check_v1_intervals(&t("100,130,0|120,140,0|1,2,1|1,2,2"), n, 32),
            Ok(())
        );
        assert_eq!(
            check_v1_intervals(&t("100,130,0|120,140,0|1,2,1|1,2,2"), n, 43),
            Err(PolicyError::TooFew(42, 43))
        );
        // Adjacent spans: no gap, no double count (0,2047,0 ends where 0,x,1 starts + 1).
        assert_eq!(
            check_v1_intervals(&t("0,2047,0|2047,0,1|0,10,0|5,2047,1"), n, 0),
            Ok(())
        );
        let mut s = vec![(0, 2047), (2048, 4095), (0, 10), (2053, 4095)];
        assert_eq!(union_len(&mut s), 2047 + 2047);
        let mut s = vec![(5, 9), (0, 2), (1, 6), (20, 21)];
        assert_eq!(union_len(&mut s), 9 + 1);
        let stock = "1310,1438,1583|1507,17,1587|708,897,387|280,1522,624";
        assert_eq!(check_v1_intervals(&t(stock), n, 32), Ok(()));
    }

    /// SplitMix64: a seeded generator, so the stock-client run below is the same every time.
    struct Mix(u64);
    impl Mix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        /// Uniform in [0, 2047], as Python's `random.randint(0, MAX_SIZE - 1)`.
        fn randint(&mut self) -> i64 {
            (self.next() >> 53) as i64
        }
    }

    /// 60,000 interval sets drawn as the stock client draws them (specs/auto-id.md §2.5:
    /// 4 tuples, a, b, l uniform in [0, 2047], redrawn until a != b) all pass the default
    /// policy, overlapping ones included (about 1 in 700 overlap).
    #[test]
    fn sixty_thousand_stock_interval_sets_pass() {
        let mut g = Mix(0x5eed_a070_1d00_0001);
        let mut overlapping = 0;
        for k in 0..60_000 {
            let tuples: Vec<Tuple> = (0..wire::MAX_SNIPPETS)
                .map(|_| loop {
                    let x = Tuple {
                        a: g.randint(),
                        b: g.randint(),
                        l: g.randint(),
                    };
                    if x.a != x.b {
                        break x;
                    }
                })
                .collect();
            let mut spans: Vec<(usize, usize)> = tuples
                .iter()
                .map(|x| {
                    let (lo, hi) = x.bounds();
                    (lo as usize, hi as usize)
                })
                .collect();
            let sum: usize = spans.iter().map(|(lo, hi)| hi - lo).sum();
            if union_len(&mut spans) < sum {
                overlapping += 1;
            }
            let text = wire::format_intervals(&tuples);
            assert_eq!(
                check_v1_intervals(&t(&text), ENTROPY_LEN, 32),
                Ok(()),
                "set {k}: {text}"
            );
        }
        assert!(overlapping >= 20, "only {overlapping} overlapping sets");
        // Our own v1 client's draws too.
        for _ in 0..2000 {
            let r = wire::random_intervals();
            assert_eq!(check_v1_intervals(&r, ENTROPY_LEN, 32), Ok(()), "{r:?}");
        }
    }

    #[test]
    fn entropy_has_the_original_shape() {
        let e = gen_entropy();
        assert_eq!(e.len(), 4_196_352);
        for line in e.chunks(2049) {
            assert_eq!(line[2048], b'\n');
            assert!(line[..2048].iter().all(|c| c.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn credential_sources_map_to_ids() {
        assert_eq!(map_credential_source("secretsmanager,abc"), Ok("abc"));
        assert_eq!(map_credential_source("anything,abc"), Ok("abc"));
        assert_eq!(
            map_credential_source("secretsmanager,abc,,AWSCURRENT"),
            Ok("abc")
        );
        assert!(map_credential_source("abc").is_err());
        assert!(map_credential_source("s,abc,v1").is_err());
        assert!(map_credential_source("s,abc,,AWSPREVIOUS").is_err());
        assert!(valid_id("auto-id-test-secret") && !valid_id("../x") && !valid_id(".x"));
        assert!(!valid_id("a/b") && !valid_id(""));
    }

    #[test]
    fn store_reads_private_files_only() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let s = Store {
            dir: d.path().into(),
        };
        crate::privfile::write_private(&d.path().join("a"), b"value\n").unwrap();
        assert_eq!(s.get("a").unwrap().as_bytes(), b"value");
        std::fs::write(d.path().join("b"), "x").unwrap();
        std::fs::set_permissions(d.path().join("b"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        assert!(matches!(s.get("b"), Err(StoreError::Exposed(_))));
        assert!(matches!(s.get("c"), Err(StoreError::NotFound(_))));
        assert!(matches!(s.get("../a"), Err(StoreError::BadId(_))));
        std::os::unix::fs::symlink(d.path().join("a"), d.path().join("l")).unwrap();
        assert!(s.get("l").is_err());
    }
}
