//! Tests of the bitmap: a `Vec<bool>` reference model, property tests of random operation
//! sequences against it, frozen regressions and edge cases by example.

mod check;
mod examples;
mod model;
mod props;
