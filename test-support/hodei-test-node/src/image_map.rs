//! Which local binary stands in for which container image.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Maps container images to local executables.
///
/// Lookup tries the exact repository and tag first (a missing tag means
/// `latest`; `docker.io/library/` is ignored), then a tagless entry for the
/// repository (`hodei-worker=/bin/w` serves `hodei-worker:any-tag`), then any
/// entry for the repository whatever its tag.
#[derive(Debug, Clone, Default)]
pub struct ImageMap {
    entries: Vec<(ImageRef, PathBuf)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ImageRef {
    repository: String,
    tag: Option<String>,
}

impl ImageRef {
    fn parse(image: &str) -> Self {
        let image = image.trim();
        let without_digest = image.split_once('@').map_or(image, |(name, _)| name);
        let (repository, tag) = match without_digest.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_owned())),
            _ => (without_digest, None),
        };
        let repository = [
            "docker.io/library/",
            "index.docker.io/library/",
            "docker.io/",
        ]
        .iter()
        .find_map(|prefix| repository.strip_prefix(prefix))
        .unwrap_or(repository);
        Self {
            repository: repository.to_owned(),
            tag,
        }
    }

    fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }
}

impl ImageMap {
    /// Parses `IMAGE=PATH` entries; later entries win over earlier ones.
    pub fn from_entries<S: AsRef<str>>(entries: &[S]) -> Result<Self> {
        let mut map = Self::default();
        for entry in entries {
            let entry = entry.as_ref();
            match entry.split_once('=') {
                Some((image, path)) if !image.trim().is_empty() && !path.trim().is_empty() => {
                    map.insert(image, path.trim());
                }
                _ => return Err(Error::ImageMap(entry.to_owned())),
            }
        }
        Ok(map)
    }

    /// Adds (or replaces) the binary for `image`.
    pub fn insert(&mut self, image: &str, path: impl Into<PathBuf>) {
        let image = ImageRef::parse(image);
        self.entries.retain(|(known, _)| *known != image);
        self.entries.push((image, path.into()));
    }

    /// The binary to run for `image`, if any.
    pub fn resolve(&self, image: &str) -> Option<&Path> {
        let wanted = ImageRef::parse(image);
        let exact = self.entries.iter().rev().find(|(known, _)| {
            known.repository == wanted.repository && known.tag_or_latest() == wanted.tag_or_latest()
        });
        let same_repository = |tagless: bool| {
            self.entries.iter().rev().find(|(known, _)| {
                known.repository == wanted.repository && (!tagless || known.tag.is_none())
            })
        };
        exact
            .or_else(|| same_repository(true))
            .or_else(|| same_repository(false))
            .map(|(_, path)| path.as_path())
    }

    /// True when no image is mapped.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[&str]) -> ImageMap {
        ImageMap::from_entries(entries).expect("valid entries")
    }

    #[test]
    fn matches_with_and_without_tag() {
        let m = map(&["hodei-worker:latest=/w", "other=/o"]);
        assert_eq!(m.resolve("hodei-worker:latest"), Some(Path::new("/w")));
        assert_eq!(m.resolve("hodei-worker"), Some(Path::new("/w")));
        assert_eq!(
            m.resolve("docker.io/library/hodei-worker"),
            Some(Path::new("/w"))
        );
        assert_eq!(m.resolve("hodei-worker:v2"), Some(Path::new("/w")));
        assert_eq!(m.resolve("other:1.0"), Some(Path::new("/o")));
        assert_eq!(m.resolve("nope:latest"), None);
    }

    #[test]
    fn exact_tag_wins_over_repository() {
        let m = map(&["w=/any", "w:v2=/v2"]);
        assert_eq!(m.resolve("w:v2"), Some(Path::new("/v2")));
        assert_eq!(m.resolve("w:v1"), Some(Path::new("/any")));
    }

    #[test]
    fn registry_ports_and_digests_are_not_tags() {
        let m = map(&["localhost:5000/w=/w"]);
        assert_eq!(m.resolve("localhost:5000/w"), Some(Path::new("/w")));
        assert_eq!(
            m.resolve("localhost:5000/w:1@sha256:abc"),
            Some(Path::new("/w"))
        );
        assert_eq!(m.resolve("localhost/w"), None);
    }

    #[test]
    fn rejects_malformed_entries() {
        for bad in ["w", "=/w", "w=", " = "] {
            assert!(ImageMap::from_entries(&[bad]).is_err(), "{bad:?}");
        }
    }
}
