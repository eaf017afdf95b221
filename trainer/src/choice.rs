//! Settings chosen by name: the method, the start, the weight draw, the convolution kernels and
//! the IDX split are spelled the same way on the command line, in a gRPC request and in
//! `config.json`. [`Choice`] gives each its list of names, so the server checks a request field
//! without a command-line parser, and the `dekm` binary's test pins clap's names to these.

/// A setting with a fixed set of named values.
pub trait Choice: Copy + PartialEq + 'static {
    /// Every value, in the order a listing shows them.
    const ALL: &'static [Self];

    /// The name a command line, a request or a settings file spells this value with.
    fn name(self) -> &'static str;

    /// The value called `name`, if any.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// Every name, as a sentence lists them: "a, b or c".
    fn names() -> String {
        let names: Vec<&str> = Self::ALL.iter().map(|c| c.name()).collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.concat(),
        }
    }
}

/// Implements [`Choice`] for an enum of unit variants from `Variant => "name"` pairs.
macro_rules! choice {
    ($t:ty { $($v:ident => $name:literal),+ $(,)? }) => {
        impl $crate::choice::Choice for $t {
            const ALL: &'static [Self] = &[$(<$t>::$v),+];
            fn name(self) -> &'static str {
                match self {
                    $(<$t>::$v => $name),+
                }
            }
        }
    };
}
pub(crate) use choice;

#[cfg(test)]
mod tests {
    use super::Choice;
    use crate::data::Split;
    use crate::model::{ConvBackend, Init};
    use crate::train::{Method, Start};

    /// The names are what `config.json` has always stored (serde's spelling of each enum).
    #[test]
    fn names_are_the_settings_files_spelling() {
        fn check<T: Choice + serde::Serialize + std::fmt::Debug>() {
            for &c in T::ALL {
                assert_eq!(serde_json::to_value(c).unwrap(), c.name(), "{c:?}");
                assert_eq!(T::from_name(c.name()), Some(c));
            }
        }
        check::<Method>();
        check::<Start>();
        check::<Init>();
        check::<ConvBackend>();
        check::<crate::features::SeriesFeatures>();
        check::<crate::gan::GanLoss>();
        check::<crate::model::ImageEncoder>();
        assert_eq!(
            Method::names(),
            "dekm, dec, idec, ae-kmeans, deepcluster or clustergan"
        );
        assert_eq!(Split::from_name("test"), Some(Split::Test));
        assert_eq!(Start::from_name("umap"), None);
    }
}
