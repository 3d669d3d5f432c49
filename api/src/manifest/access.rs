//! The serde access types the deserializer in `de.rs` hands to visitors: map
//! entries, list items, map keys, and enums written as a word or a one-entry map.

use serde::de::value::StrDeserializer;
use serde::de::{DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde::forward_to_deserialize_any;

use super::de::De;
use super::error::DeError;
use super::node::{Entry, Node, clip};

type Res<T> = Result<T, DeError>;

/// Walks a map's entries; key errors point at the key.
pub(super) struct MapAcc<'p, 'a, 'c> {
    de: &'p De<'a, 'c>,
    entries: std::slice::Iter<'a, Entry>,
    pending: Option<&'a Entry>,
}

impl<'p, 'a, 'c> MapAcc<'p, 'a, 'c> {
    pub(super) fn new(de: &'p De<'a, 'c>, entries: &'a [Entry]) -> Self {
        MapAcc {
            de,
            entries: entries.iter(),
            pending: None,
        }
    }
}

impl<'de> MapAccess<'de> for MapAcc<'_, 'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Res<Option<K::Value>> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.pending = Some(entry);
        seed.deserialize(KeyDe(&entry.key))
            .map(Some)
            .map_err(|e| e.at(|| self.de.key_loc(entry)))
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Res<S::Value> {
        match self.pending.take() {
            Some(entry) => {
                let child = self.de.child_key(entry);
                seed.deserialize(child.clone()).map_err(|e| child.locate(e))
            }
            None => Err(DeError::value("a value was read before its key".into(), None)),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// Walks a list's items.
pub(super) struct SeqAcc<'p, 'a, 'c> {
    de: &'p De<'a, 'c>,
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
}

impl<'p, 'a, 'c> SeqAcc<'p, 'a, 'c> {
    pub(super) fn new(de: &'p De<'a, 'c>, items: &'a [Node]) -> Self {
        SeqAcc {
            de,
            items: items.iter().enumerate(),
        }
    }
}

impl<'de> SeqAccess<'de> for SeqAcc<'_, 'de, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Res<Option<T::Value>> {
        let Some((i, node)) = self.items.next() else {
            return Ok(None);
        };
        let child = self.de.child_index(i, node);
        seed.deserialize(child.clone())
            .map(Some)
            .map_err(|e| child.locate(e))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// A map key: always text.
struct KeyDe<'a>(&'a str);

impl<'de> serde::Deserializer<'de> for KeyDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Res<V::Value> {
        v.visit_str(self.0)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// An enum written as a bare word: `Always`.
pub(super) struct ScalarEnum<'a> {
    pub(super) text: &'a str,
}

impl<'de> EnumAccess<'de> for ScalarEnum<'_> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Res<(V::Value, Self)> {
        let v = seed.deserialize(StrDeserializer::<DeError>::new(self.text))?;
        Ok((v, self))
    }
}

impl<'de> VariantAccess<'de> for ScalarEnum<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Res<()> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Res<T::Value> {
        Err(self.needs_value())
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _v: V) -> Res<V::Value> {
        Err(self.needs_value())
    }

    fn struct_variant<V: Visitor<'de>>(self, _fields: &'static [&'static str], _v: V) -> Res<V::Value> {
        Err(self.needs_value())
    }
}

impl ScalarEnum<'_> {
    fn needs_value(&self) -> DeError {
        DeError::value(
            format!("`{}` needs a value", clip(self.text)),
            Some(format!("write it as `{}: …`", clip(self.text))),
        )
    }
}

/// An enum written as a one-entry map: `exec: {command: [...]}`.
pub(super) struct MapEnum<'p, 'a, 'c> {
    pub(super) de: &'p De<'a, 'c>,
    pub(super) entry: &'a Entry,
}

impl<'de> EnumAccess<'de> for MapEnum<'_, 'de, '_> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Res<(V::Value, Self)> {
        let v = seed
            .deserialize(KeyDe(&self.entry.key))
            .map_err(|e| e.at(|| self.de.key_loc(self.entry)))?;
        Ok((v, self))
    }
}

impl<'de> VariantAccess<'de> for MapEnum<'_, 'de, '_> {
    type Error = DeError;

    fn unit_variant(self) -> Res<()> {
        let child = self.de.child_key(self.entry);
        if child.node.is_null() {
            Ok(())
        } else {
            child.fail(format!("`{}` takes no value", self.entry.key), None)
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Res<T::Value> {
        let child = self.de.child_key(self.entry);
        seed.deserialize(child.clone()).map_err(|e| child.locate(e))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> Res<V::Value> {
        serde::Deserializer::deserialize_seq(self.de.child_key(self.entry), v)
    }

    fn struct_variant<V: Visitor<'de>>(self, _fields: &'static [&'static str], v: V) -> Res<V::Value> {
        serde::Deserializer::deserialize_map(self.de.child_key(self.entry), v)
    }
}
