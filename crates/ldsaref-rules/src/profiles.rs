//! The profile names of a rule set, in order of first appearance.

use std::collections::HashMap;

use crate::ProfileId;

#[derive(Clone, Default, Debug)]
pub(crate) struct Profiles {
    names: Vec<String>,
    ids: HashMap<String, ProfileId>,
}

impl Profiles {
    /// The id of `name`, registering it if it is new: a header repeating a
    /// name continues that section.
    pub(crate) fn intern(&mut self, name: &str) -> ProfileId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = ProfileId::new(self.names.len());
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }

    pub(crate) fn get(&self, name: &str) -> Option<ProfileId> {
        self.ids.get(name).copied()
    }

    pub(crate) fn name(&self, id: ProfileId) -> Option<&str> {
        self.names.get(id.index()).map(String::as_str)
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    /// Forgets the profiles registered after the first `len`.
    pub(crate) fn truncate(&mut self, len: usize) {
        for name in self.names.drain(len.min(self.names.len())..) {
            self.ids.remove(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intern_and_truncate() {
        let mut p = Profiles::default();
        let a = p.intern("a");
        let b = p.intern("b");
        assert_eq!(p.intern("a"), a);
        assert_ne!(a, b);
        assert_eq!(p.names().collect::<Vec<_>>(), ["a", "b"]);
        p.truncate(1);
        assert_eq!(p.get("b"), None);
        assert_eq!(p.get("a"), Some(a));
        assert_eq!(p.name(a), Some("a"));
        assert_eq!(p.len(), 1);
        assert_eq!(p.intern("c").index(), 1);
    }
}
