//! The scenarios, in the threat model's order (section 4.2). Each fills its [`Ctx`]'s outcome:
//! the rule it applied, what was delivered, its controls and its pass criteria.

use crate::scenario::Ctx;

mod t1;
mod t10;
mod t11;
mod t12;
mod t15;
mod t16;
mod t17;
mod t3;
mod t4;
mod t5;
mod t6;
mod t7;
mod t8;
mod t9;

/// A scenario.
pub struct Def {
    pub id: &'static str,
    pub title: &'static str,
    /// The threat model's pass criterion, in its words.
    pub criterion: &'static str,
    pub run: fn(&mut Ctx) -> anyhow::Result<()>,
}

/// Every scenario, in order.
pub const ALL: &[&Def] = &[
    &t1::DEF,
    &t3::DEF,
    &t4::DEF,
    &t5::DEF,
    &t6::DEF,
    &t7::DEF,
    &t8::DEF,
    &t9::DEF,
    &t10::DEF,
    &t11::DEF,
    &t12::DEF,
    &t15::DEF,
    &t16::DEF,
    &t17::DEF,
];

/// The scenario called `id` (case does not matter).
pub fn find(id: &str) -> Option<&'static Def> {
    ALL.iter().copied().find(|d| d.id.eq_ignore_ascii_case(id))
}
