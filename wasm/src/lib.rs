//! blockmirror in the browser: wasm-bindgen bindings over the core simulator.

use wasm_bindgen::prelude::*;

/// The crate version.
#[wasm_bindgen]
pub fn version() -> String {
    blockmirror_core::VERSION.to_owned()
}
