//! Usernames: which are allowed, and when two are the same name.
//!
//! A name is shown as typed, but two names that render alike must not both
//! be granted, and none may render like [`SYSTEM`]. So:
//!
//! - **Refused** ([`check`]): control characters (Cc), and every character
//!   that renders as nothing or as blank space: format characters (Cf:
//!   zero-width space, joiners, bidi embeddings, overrides and isolates,
//!   the byte-order mark, tags, ...), line and paragraph separators (Zl,
//!   Zp), every space but U+0020 (the other Zs: no-break, en, em,
//!   ideographic, ...), the other default-ignorable code points (variation
//!   selectors, the combining grapheme joiner, Hangul fillers, Mongolian
//!   free variation selectors, ...), the braille blank U+2800, and
//!   noncharacters. The table is Unicode 14's categories plus the Egyptian
//!   hieroglyph format controls of Unicode 15.
//! - **Folded** ([`fold`]) before the uniqueness and reserved-name checks:
//!   fullwidth forms to ASCII; a small hand-kept table of Latin, Cyrillic
//!   and Greek look-alikes to one Latin letter (`а е о р с у х ѕ і ј` and
//!   their capitals, `Α Β Ε Ζ Η Ι Κ Μ Ν Ο Ρ Τ Υ Χ`, `ο ν ρ ...`, and `I`,
//!   `1`, `|` as `l`, `0` as `o`); everything else lowercased; runs of
//!   spaces as one. So `SYSTEM`, `Sуstem` (Cyrillic у) and `Ѕystem`
//!   (Cyrillic Ѕ) all fold to `system`, and `Ann` and `ann` are one name.
//!
//! Not covered: multi-letter look-alikes (`rn` and `m`), combining marks,
//! and scripts beyond Latin, Cyrillic and Greek (mathematical letters,
//! Cherokee, ...); a full UTS #39 skeleton would need its data tables.

use crate::protocol::chat::SYSTEM;

/// Why a username was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadName {
    /// Empty, over 32 bytes, or holding a control character.
    Length,
    /// Holding a character that renders as nothing or as blank space.
    Invisible(char),
}

impl BadName {
    /// The error a member is told (after `error: `).
    pub(crate) fn message(self) -> String {
        match self {
            BadName::Length => "usernames are 1 to 32 bytes without control characters".into(),
            BadName::Invisible(c) => format!(
                "usernames may not hold invisible, format or non-ASCII space characters \
                 (U+{:04X})",
                u32::from(c)
            ),
        }
    }
}

/// Checks a trimmed username: 1 to 32 bytes, no control characters, none
/// of the invisible ones listed in the module docs.
pub(crate) fn check(name: &str) -> Result<(), BadName> {
    if !(1..=32).contains(&name.len()) || name.chars().any(char::is_control) {
        return Err(BadName::Length);
    }
    match name.chars().find(|&c| invisible(c)) {
        Some(c) => Err(BadName::Invisible(c)),
        None => Ok(()),
    }
}

/// Whether `name` folds to the reserved [`SYSTEM`].
pub(crate) fn reserved(name: &str) -> bool {
    fold(name) == fold(SYSTEM)
}

/// The key two names are compared by (see the module docs).
pub(crate) fn fold(name: &str) -> String {
    let mut folded = String::with_capacity(name.len());
    for c in name.chars() {
        let c = fullwidth(c);
        match look_alike(c) {
            Some(latin) => folded.push(latin),
            None => {
                for lower in c.to_lowercase() {
                    folded.push(look_alike(lower).unwrap_or(lower));
                }
            }
        }
        if folded.ends_with("  ") {
            folded.pop();
        }
    }
    folded
}

/// Fullwidth ASCII (U+FF01 to U+FF5E) as ASCII.
fn fullwidth(c: char) -> char {
    match u32::from(c) {
        n @ 0xFF01..=0xFF5E => char::from_u32(n - 0xFEE0).unwrap_or(c),
        _ => c,
    }
}

/// The Latin letter `c` renders like, if it is in the table.
fn look_alike(c: char) -> Option<char> {
    LOOK_ALIKES
        .binary_search_by_key(&c, |&(from, _)| from)
        .ok()
        .map(|i| LOOK_ALIKES[i].1)
}

/// Characters that render like a (lowercase) Latin one, sorted.
const LOOK_ALIKES: &[(char, char)] = &[
    ('0', 'o'),
    ('1', 'l'),
    ('I', 'l'),
    ('|', 'l'),
    ('\u{131}', 'i'), // ı dotless i
    ('\u{1C0}', 'l'), // ǀ dental click
    ('\u{237}', 'j'), // ȷ dotless j
    ('\u{251}', 'a'), // ɑ
    ('\u{261}', 'g'), // ɡ script g
    ('\u{37F}', 'j'), // Ϳ
    ('\u{391}', 'a'), // Α
    ('\u{392}', 'b'), // Β
    ('\u{395}', 'e'), // Ε
    ('\u{396}', 'z'), // Ζ
    ('\u{397}', 'h'), // Η
    ('\u{399}', 'l'), // Ι
    ('\u{39A}', 'k'), // Κ
    ('\u{39C}', 'm'), // Μ
    ('\u{39D}', 'n'), // Ν
    ('\u{39F}', 'o'), // Ο
    ('\u{3A1}', 'p'), // Ρ
    ('\u{3A4}', 't'), // Τ
    ('\u{3A5}', 'y'), // Υ
    ('\u{3A7}', 'x'), // Χ
    ('\u{3B1}', 'a'), // α
    ('\u{3B3}', 'y'), // γ
    ('\u{3B9}', 'i'), // ι
    ('\u{3BA}', 'k'), // κ
    ('\u{3BD}', 'v'), // ν
    ('\u{3BF}', 'o'), // ο
    ('\u{3C1}', 'p'), // ρ
    ('\u{3C5}', 'u'), // υ
    ('\u{3C7}', 'x'), // χ
    ('\u{3F2}', 'c'), // ϲ lunate sigma
    ('\u{3F3}', 'j'), // ϳ
    ('\u{3F9}', 'c'), // Ϲ
    ('\u{405}', 's'), // Ѕ
    ('\u{406}', 'l'), // І
    ('\u{408}', 'j'), // Ј
    ('\u{410}', 'a'), // А
    ('\u{412}', 'b'), // В
    ('\u{415}', 'e'), // Е
    ('\u{41A}', 'k'), // К
    ('\u{41C}', 'm'), // М
    ('\u{41D}', 'h'), // Н
    ('\u{41E}', 'o'), // О
    ('\u{420}', 'p'), // Р
    ('\u{421}', 'c'), // С
    ('\u{422}', 't'), // Т
    ('\u{423}', 'y'), // У
    ('\u{425}', 'x'), // Х
    ('\u{430}', 'a'), // а
    ('\u{435}', 'e'), // е
    ('\u{43E}', 'o'), // о
    ('\u{440}', 'p'), // р
    ('\u{441}', 'c'), // с
    ('\u{443}', 'y'), // у
    ('\u{445}', 'x'), // х
    ('\u{455}', 's'), // ѕ
    ('\u{456}', 'i'), // і
    ('\u{458}', 'j'), // ј
    ('\u{474}', 'v'), // Ѵ
    ('\u{475}', 'v'), // ѵ
    ('\u{4AE}', 'y'), // Ү
    ('\u{4AF}', 'y'), // ү
    ('\u{4BA}', 'h'), // Һ
    ('\u{4BB}', 'h'), // һ
    ('\u{4C0}', 'l'), // Ӏ palochka
    ('\u{4CF}', 'l'), // ӏ
    ('\u{501}', 'd'), // ԁ
    ('\u{50D}', 'g'), // ԍ
    ('\u{51A}', 'q'), // Ԛ
    ('\u{51B}', 'q'), // ԛ
    ('\u{51C}', 'w'), // Ԝ
    ('\u{51D}', 'w'), // ԝ
];

/// Whether `c` renders as nothing or as blank space (see the module docs;
/// control characters are checked apart).
fn invisible(c: char) -> bool {
    let n = u32::from(c);
    let noncharacter = (0xFDD0..=0xFDEF).contains(&n) || n & 0xFFFE == 0xFFFE;
    noncharacter
        || INVISIBLE
            .binary_search_by(|&(lo, hi)| {
                if hi < n {
                    std::cmp::Ordering::Less
                } else if lo > n {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
}

/// Inclusive ranges, sorted: Cf, Zl, Zp, Zs but U+0020, the other
/// default-ignorable code points, and U+2800.
const INVISIBLE: &[(u32, u32)] = &[
    (0xA0, 0xA0),
    (0xAD, 0xAD),
    (0x34F, 0x34F),
    (0x600, 0x605),
    (0x61C, 0x61C),
    (0x6DD, 0x6DD),
    (0x70F, 0x70F),
    (0x890, 0x891),
    (0x8E2, 0x8E2),
    (0x115F, 0x1160),
    (0x1680, 0x1680),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x2000, 0x200F),
    (0x2028, 0x202F),
    (0x205F, 0x206F),
    (0x2800, 0x2800),
    (0x3000, 0x3000),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted() {
        assert!(LOOK_ALIKES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(INVISIBLE.windows(2).all(|w| w[0].1 < w[1].0));
        assert!(INVISIBLE.iter().all(|&(lo, hi)| lo <= hi));
        assert!(LOOK_ALIKES.iter().all(|&(_, to)| to.is_ascii_lowercase()));
    }

    #[test]
    fn the_five_attack_names() {
        // Invisible: refused, naming the character.
        let zwsp = "Sys\u{200B}tem";
        let zwj = "System\u{200D}";
        let isolate = "\u{2068}System\u{2069}";
        assert_eq!(check(zwsp), Err(BadName::Invisible('\u{200B}')));
        assert_eq!(check(zwj), Err(BadName::Invisible('\u{200D}')));
        assert_eq!(check(isolate), Err(BadName::Invisible('\u{2068}')));
        assert_eq!(
            BadName::Invisible('\u{200B}').message(),
            "usernames may not hold invisible, format or non-ASCII space characters (U+200B)"
        );
        // Look-alikes: allowed characters, but the reserved name.
        let cyrillic_e = "Syst\u{435}m";
        let cyrillic_dze = "\u{405}ystem";
        for name in [cyrillic_e, cyrillic_dze] {
            assert_eq!(check(name), Ok(()));
            assert_eq!(fold(name), "system");
            assert!(reserved(name), "{name}");
        }
    }

    #[test]
    fn folding() {
        for name in [
            "System",
            "SYSTEM",
            "S\u{443}stem",
            "\u{FF33}ystem",
            "\u{405}\u{3A5}stem",
        ] {
            assert!(reserved(name), "{name}");
        }
        assert!(!reserved("Systems") && !reserved("System-2"));
        assert_eq!(fold("Ann"), "ann");
        assert_eq!(fold("ANN  LEE"), "ann lee");
        assert_eq!(fold("\u{41E}\u{3BF}0o"), "oooo");
        assert_eq!(fold("Ivan"), fold("lvan"));
        assert_eq!(fold("bob1"), fold("bobl"));
        assert_eq!(fold("z\u{fc}rich"), "z\u{fc}rich");
        assert_ne!(fold("ann"), fold("anna"));
    }

    #[test]
    fn what_is_refused() {
        for c in [
            '\u{0}', '\u{1b}', '\u{7f}', '\u{85}', // Cc
        ] {
            assert_eq!(check(&format!("a{c}b")), Err(BadName::Length), "{c:?}");
        }
        for c in [
            '\u{A0}',
            '\u{AD}',
            '\u{34F}',
            '\u{61C}',
            '\u{115F}',
            '\u{180E}',
            '\u{2003}',
            '\u{200B}',
            '\u{200C}',
            '\u{200E}',
            '\u{2028}',
            '\u{2029}',
            '\u{202E}',
            '\u{2060}',
            '\u{2066}',
            '\u{2800}',
            '\u{3000}',
            '\u{3164}',
            '\u{FE0F}',
            '\u{FEFF}',
            '\u{FFA0}',
            '\u{FDD0}',
            '\u{FFFE}',
            '\u{1D173}',
            '\u{E0001}',
            '\u{E0041}',
            '\u{10FFFF}',
        ] {
            assert_eq!(
                check(&format!("a{c}b")),
                Err(BadName::Invisible(c)),
                "{c:?}"
            );
        }
        for name in [
            "ann",
            "Ann Lee",
            "z\u{fc}rich",
            "\u{43C}\u{438}\u{440}",
            "\u{1F600}",
        ] {
            assert_eq!(check(name), Ok(()), "{name}");
        }
        assert_eq!(check(""), Err(BadName::Length));
        assert_eq!(check(&"n".repeat(33)), Err(BadName::Length));
    }
}
