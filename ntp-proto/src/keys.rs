//! The keyfile (`keyfile`): symmetric keys for NTP authentication, in chrony's format
//! ("ID [TYPE] [HEX:|ASCII:]KEY"). Read and checked now; used by authentication later.

use std::path::Path;

/// Hash or cipher a key is for.
const TYPES: &[&str] = &[
    "MD5",
    "SHA1",
    "SHA256",
    "SHA384",
    "SHA512",
    "SHA3-224",
    "SHA3-256",
    "SHA3-384",
    "SHA3-512",
    "TIGER",
    "WHIRLPOOL",
    "AES128",
    "AES256",
];

/// One symmetric key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    /// Key number.
    pub id: u32,
    /// Hash or cipher name, upper case.
    pub kind: String,
    /// The secret.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Key {
    // Secrets stay out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Key {{ id: {}, kind: {}, {} bytes }}",
            self.id,
            self.kind,
            self.secret.len()
        )
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Parses a keyfile; errors name the file, line and problem (never the secret).
pub fn parse(text: &str, file: &Path) -> Result<Vec<Key>, String> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let err = |m: &str| format!("{}:{}: {m}", file.display(), n + 1);
        let t: Vec<&str> = content.split_whitespace().collect();
        let id: u32 = t[0].parse().ok().filter(|i| *i > 0).ok_or_else(|| {
            err(&format!(
                "invalid key id \"{}\" (expected 1-4294967295)",
                t[0]
            ))
        })?;
        let (kind, key) = match t.as_slice() {
            [_, key] => ("MD5".to_string(), *key),
            [_, kind, key] => (kind.to_ascii_uppercase(), *key),
            _ => return Err(err("expected ID [TYPE] KEY")),
        };
        if !TYPES.contains(&kind.as_str()) {
            return Err(err(&format!("unknown key type \"{kind}\"")));
        }
        let secret = if let Some(h) = key.strip_prefix("HEX:") {
            hex(h).ok_or_else(|| err("key after HEX: is not an even number of hex digits"))?
        } else {
            key.strip_prefix("ASCII:")
                .unwrap_or(key)
                .as_bytes()
                .to_vec()
        };
        if keys.iter().any(|k: &Key| k.id == id) {
            return Err(err(&format!("key {id} defined twice")));
        }
        keys.push(Key { id, kind, secret });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chrony_keyfiles_parse() {
        let k = parse(
            "# comment\n1 MD5 HEX:A6CFC50C9C93AB6E5A19754C246242FC\n2 sha256 ASCII:secret\n3 plaintext\n",
            Path::new("k"),
        )
        .unwrap();
        assert_eq!(k.len(), 3);
        assert_eq!(
            (k[0].id, k[0].kind.as_str(), k[0].secret.len()),
            (1, "MD5", 16)
        );
        assert_eq!(
            (k[1].kind.as_str(), k[1].secret.as_slice()),
            ("SHA256", &b"secret"[..])
        );
        assert_eq!(
            (k[2].kind.as_str(), k[2].secret.as_slice()),
            ("MD5", &b"plaintext"[..])
        );
        assert!(
            !format!("{:?}", k[1]).contains("secret"),
            "secrets stay out of Debug"
        );
    }

    #[test]
    fn bad_lines_name_the_line() {
        for (text, expect) in [
            ("x MD5 abc", "k:1: invalid key id \"x\""),
            ("1 FOO abc", "k:1: unknown key type \"FOO\""),
            ("\n1 MD5 HEX:abc", "k:2: key after HEX:"),
            ("1 a\n1 b", "k:2: key 1 defined twice"),
            ("1 MD5 a b", "k:1: expected ID [TYPE] KEY"),
        ] {
            let e = parse(text, Path::new("k")).unwrap_err();
            assert!(e.starts_with(expect), "{text:?}: {e}");
        }
    }
}
